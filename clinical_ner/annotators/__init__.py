"""Every way of annotating a text: the Keras model, a SavedModel export, a LiteRT export."""

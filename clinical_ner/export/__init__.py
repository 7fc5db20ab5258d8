"""Writing a trained model out: SavedModel for TF Serving, LiteRT, and the serving contract."""

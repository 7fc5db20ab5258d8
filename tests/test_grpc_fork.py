"""A process that uses our gRPC code can still start subprocesses as PySpark does.

grpcio 1.80 and later, unless ``GRPC_ENABLE_FORK_SUPPORT`` is false, crash a
child now and then (2 to 6 per cent here) that ``subprocess.Popen(...,
preexec_fn=...)`` forks while RPCs are in flight (grpc/grpc#43055): PySpark starts its JVM that way ("Java gateway process
exited before sending its port number"). ``clinical_ner.serving`` turns the
fork support off unless the environment says otherwise.
"""
import os
import subprocess
import sys
import textwrap

import pytest

# A fresh interpreter: grpcio reads the setting when grpc is first imported.
SCRIPT = textwrap.dedent("""
    import os, signal, subprocess, sys, threading
    from concurrent import futures

    import clinical_ner.serving.client  # what a user of our client imports first
    import grpc

    server = grpc.server(futures.ThreadPoolExecutor(4))
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
        "test.Echo", {"Echo": grpc.unary_unary_rpc_method_handler(lambda r, c: r)}),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    echo = grpc.insecure_channel(f"127.0.0.1:{port}").unary_unary("/test.Echo/Echo")
    stopping = threading.Event()

    def calls():
        while not stopping.is_set():
            echo(b"x")

    caller = threading.Thread(target=calls, daemon=True)
    caller.start()

    def ignore_interrupts():  # what PySpark's launch_gateway passes
        signal.signal(signal.SIGINT, signal.SIG_IGN)

    def start_child():
        child = subprocess.Popen(["/bin/sh", "-c", "exit 0"], stdin=subprocess.PIPE,
                                 preexec_fn=ignore_interrupts)
        try:
            return child.wait(timeout=20)
        except subprocess.TimeoutExpired:  # a child that hangs before its exec
            child.kill()
            return "hung"

    codes = [start_child() for _ in range(int(sys.argv[1]))]
    stopping.set()
    caller.join(timeout=20)
    server.stop(None)
    print("children that failed:", sum(code != 0 for code in codes))
    sys.stdout.flush()
    os._exit(0)  # not gRPC's shutdown: what is measured is above
""")


@pytest.mark.slow
def test_children_start_while_rpcs_are_in_flight():
    env = {key: value for key, value in os.environ.items()
           if key != "GRPC_ENABLE_FORK_SUPPORT"}
    completed = subprocess.run([sys.executable, "-c", SCRIPT, "400"], env=env,
                               capture_output=True, text=True, timeout=180)
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert "children that failed: 0" in completed.stdout.splitlines()

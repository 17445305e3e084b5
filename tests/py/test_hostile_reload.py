"""SIGHUP reload against a configuration path that blocks (issue 17, item 7): a FIFO stands for
a hung NFS/FUSE mount. The server keeps serving, reports the stuck reload and abandons it.
"""

from __future__ import annotations

import os
import signal
import time


def test_reload_from_a_blocking_path_does_not_freeze_the_server(start, tmp_path):
    config = tmp_path / "config.toml"
    config.write_text("# empty\n")
    srv = start(config=config)
    config.unlink()
    os.mkfifo(config)  # opening it for reading blocks until a writer appears: never
    srv.signal(signal.SIGHUP)
    # While the reload is stuck the server answers.
    for _ in range(5):
        status, _, _ = srv.request("GET", "/healthz", timeout=5)
        assert status == 200
        time.sleep(0.2)
    srv.wait_log("reload abandoned", timeout=30)
    # A later reload from a sane file works again.
    config.unlink()
    config.write_text("# empty again\n")
    srv.sighup_and_wait(timeout=30)
    status, _, _ = srv.request("GET", "/healthz", timeout=5)
    assert status == 200

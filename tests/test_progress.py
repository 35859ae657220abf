import io
import json
import threading
import time

from rich.console import Console

from harmonycell.agents.cli.progress import last_epoch, node_progress


def test_last_epoch_skips_a_line_being_written(tmp_path):
    log = tmp_path / "train_log.jsonl"
    assert last_epoch(log) is None
    log.write_text(json.dumps({"epoch": 3, "stop_loss": 0.5}) + "\n" + '{"epoch": 4, "sto')
    assert last_epoch(log)["epoch"] == 3


def test_bar_follows_the_node_log(tmp_path):
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=120)
    log = tmp_path / "train_log.jsonl"

    def train():
        for e in range(5):
            with open(log, "a") as fh:
                fh.write(json.dumps({"epoch": e, "stop_loss": 1.0 / (e + 1)}) + "\n")
            time.sleep(0.05)

    with node_progress(console, tmp_path, "n001 test", epochs=5, every_s=0.02):
        t = threading.Thread(target=train)
        t.start()
        t.join()
        time.sleep(0.1)
    text = out.getvalue()
    assert "5/5" in text and "held-out loss 0.2000" in text

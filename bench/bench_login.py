"""The web console's login under attack: peak RSS of the console while many clients send a password at once
(scrypt costs ~32 MB a check), and how many guesses one address gets through in a given time.

    python bench/bench_login.py [--clients 40] [--seconds 15]

Prints the console's peak RSS before and after the burst, the answers to the burst, and then the guesses a
single address made in `--seconds` (sequential, each with a fresh form) and what they were answered.
"""

from __future__ import annotations

import argparse
import collections
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from test_web import Client  # noqa: E402
from webconsole import WebConsole, write_config  # noqa: E402

from agent.web.security import hash_password  # noqa: E402


def peak_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM")) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=40)
    parser.add_argument("--seconds", type=float, default=15.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        console = WebConsole(write_config(Path(tmp), web={"password_hash": hash_password("right one")}))
        try:
            Client(console).request("GET", "/login")
            before = peak_mib(console.proc.pid)
            clients = [Client(console) for _ in range(args.clients)]
            started = time.monotonic()
            with ThreadPoolExecutor(args.clients) as pool:
                answers = collections.Counter(pool.map(lambda c: c.login("guess"), clients))
            print(f"{args.clients} parallel logins: {time.monotonic() - started:.1f} s, answers {dict(answers)}, "
                  f"console peak RSS {before:.0f} -> {peak_mib(console.proc.pid):.0f} MiB")
        finally:
            console.stop()
        console = WebConsole(write_config(Path(tmp), web={"password_hash": hash_password("right one")}))
        try:
            client = Client(console)
            answers = collections.Counter()
            deadline = time.monotonic() + args.seconds
            while time.monotonic() < deadline:
                answers[client.login(f"guess{sum(answers.values())}")] += 1
            print(f"one address, {args.seconds:.0f} s of guessing: {answers[401]} passwords checked, "
                  f"answers {dict(answers)}")
        finally:
            console.stop()


if __name__ == "__main__":
    main()

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from tiny import bundled_tokenizer  # noqa: E402


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("tokenizer")
    bundled_tokenizer(d)
    return d


import os  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402

import httpx  # noqa: E402
from tiny import build  # noqa: E402
from transformers import AutoTokenizer  # noqa: E402

VENV_BIN = Path(sys.executable).parent


@pytest.fixture(scope="session")
def tiny_llama(tokenizer_dir, tmp_path_factory) -> Path:
    """A tiny random Llama causal LM with the bundled tokenizer, usable as encoder and yes/no reranker."""
    return build(tmp_path_factory.mktemp("tiny-llama"), AutoTokenizer.from_pretrained(tokenizer_dir), "llama")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def reprank_cmd(*args: str) -> list[str]:
    return [str(VENV_BIN / "reprank"), *args]


def tiny_model_args(folder: Path) -> list[str]:
    return ["--model", str(folder), "--model-preset", "smollm2",
            "--reranker", str(folder), "--reranker-preset", "smollm2-reranker"]


class Server:
    """`reprank serve` as a real subprocess on a free 127.0.0.1 port."""

    def __init__(self, args: list[str], env: dict | None = None, timeout: float = 120, port: int | None = None):
        self.port = port or free_port()  # a given port: a restart where clients already point
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(Path(os.environ.get("TMPDIR", "/tmp")) / f"reprank-serve-{self.port}.log", "w+")
        self.proc = subprocess.Popen(reprank_cmd("serve", "--port", str(self.port), *args),
                                     env={**os.environ, **(env or {})}, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.output()}")
            try:
                if httpx.get(self.url + "/readyz", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.3)
        output = self.output()  # read before stop() closes the log
        self.stop()
        raise RuntimeError(f"server not ready in {timeout}s: {output}")

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read()[-3000:]

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()

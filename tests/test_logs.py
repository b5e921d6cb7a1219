"""The CLI's logging: its own format even after a library installed Python's default handler,
and no INFO chatter from jax's platform probe or bm25s, while their warnings still show."""

import subprocess
import sys


def _stderr(code: str) -> str:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return out.stderr


def test_cli_logging_replaces_a_default_handler_and_quiets_library_info():
    err = _stderr(
        "import logging\n"
        "logging.basicConfig()  # as absl does when orbax logs at import\n"
        "from orchestra_jax.logs import configure_cli_logging\n"
        "configure_cli_logging(logging.INFO)\n"
        "import jax\n"
        "jax.devices()  # on a machine without a TPU: an INFO record about libtpu\n"
        "logging.getLogger('jax._src.xla_bridge').info('probe noise')\n"
        "logging.getLogger('bm25s').debug('index noise')\n"
        "logging.getLogger('bm25s').warning('bm25s warning')\n"
        "logging.getLogger('jax._src.xla_bridge').warning('jax warning')\n"
        "logging.getLogger('orchestra_jax.train').info('our info')\n"
    )
    lines = err.strip().splitlines()
    assert "libtpu" not in err and "noise" not in err and "DEBUG" not in err
    # The CLI's format (time, logger, message), not the default "LEVEL:name:message".
    assert [line.split(" ", 2)[2] for line in lines] == [
        "bm25s bm25s warning", "jax._src.xla_bridge jax warning", "orchestra_jax.train our info"]


def test_cli_logging_at_warning_hides_info():
    err = _stderr(
        "import logging\n"
        "from orchestra_jax.logs import configure_cli_logging\n"
        "configure_cli_logging()\n"
        "logging.getLogger('orchestra_jax.train').info('hidden')\n"
        "logging.getLogger('orchestra_jax.train').warning('shown')\n"
    )
    assert "hidden" not in err and err.strip().endswith("orchestra_jax.train shown")

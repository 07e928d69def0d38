"""What a normal run prints: Ray's harmless complaints dropped, at the one place they can be caught.

Ray's core worker logs from C++ straight to this process's stderr (file descriptor 2), past Python's
logging and warnings filters, so the only place to drop one of its lines is the descriptor itself.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading

# Lines of Ray's own that our settings cannot avoid and that are harmless for our jobs, each with why.
HARMLESS_STDERR = (
    # Ray Data hands every actor-pool worker its map function and context as object-store references
    # and turns actor restarts on (ray-project/ray#57733, open). The dataset holds those references
    # until it finishes, so a restarted inference actor still finds them: nothing for a user to do.
    b"has constructor arguments in the object store and max_restarts > 0",
)


@contextlib.contextmanager
def filtered_stderr(patterns: tuple[bytes, ...] = HARMLESS_STDERR):
    """While inside, drop the lines of fd 2 that contain one of `patterns`; pass every other line on.

    Enter it after Ray's processes have started (ray.init), so that none of them holds the pipe.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)

    def pump() -> None:
        pending = b""
        while True:
            chunk = os.read(read_end, 65536)  # b"" once fd 2 is restored: the pipe's last write end closed
            pending += chunk
            # Pass on every finished line at once; "\r" ends one too, so progress bars keep moving.
            cut = max(pending.rfind(b"\n"), pending.rfind(b"\r")) + 1 if chunk else len(pending)
            out, pending = pending[:cut], pending[cut:]
            if out:
                kept = [seg for seg in out.splitlines(keepends=True) if not any(p in seg for p in patterns)]
                os.write(saved, b"".join(kept))
            if not chunk:
                os.close(read_end)
                return

    thread = threading.Thread(target=pump, name="matting-stderr", daemon=True)
    thread.start()
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)  # closes the pipe's write end; the pump drains what is left and stops
        thread.join(timeout=10)
        if not thread.is_alive():
            os.close(saved)


class _DropMessage(logging.Filter):
    def __init__(self, text: str):
        super().__init__()
        self.text = text

    def filter(self, record: logging.LogRecord) -> bool:
        return self.text not in record.getMessage()


def quiet_token_auth_notice() -> None:
    """Ray 2.60 turns token authentication on for every new local instance whose RAY_AUTH_MODE is unset,
    and warns each time that it did. Authentication stays on (Ray's choice, and a sound one); only the
    notice goes. Setting the variable ourselves would not do: Ray reads it once, at import."""
    logger = logging.getLogger("ray._private.authentication.authentication_token_setup")
    if not any(isinstance(f, _DropMessage) for f in logger.filters):
        logger.addFilter(_DropMessage("Token authentication is enabled for this Ray cluster"))

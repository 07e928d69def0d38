"""What a test can ask the running Ray instance about its own job."""

from __future__ import annotations


def inference_actors_started() -> int:
    """Every inference actor this Ray instance ever created, alive or dead (from the GCS actor table)."""
    import ray._private.state

    return sum(1 for a in ray._private.state.actors().values() if "Predictor" in a.get("ActorClassName", ""))

"""The model the demo ships: trained before the stack starts on other users of the demo's simulated population
(the same LLMs and LLM styles, none of the demo's users), and published as the serving version, as a deployment
ships a model trained elsewhere so that it routes with it from the first request (`prefstream fit --promote`)."""

from __future__ import annotations

import json
from pathlib import Path


def ship_model(seed: int, demo_users: int, users: int, turns: int, steps: int, out: Path, registry: Path,
               encoder: str, progress: bool = False) -> dict:
    """Simulate ``demo_users + users`` users of the demo's population (``seed``; ``turns`` turns each, about),
    write the GMTRouter files of all but the demo's own users (the first ``demo_users``) to ``out``, train
    ``steps`` steps on them (trainer.ship.fit_and_publish, `prefstream fit`'s defaults otherwise) and publish the
    model to ``registry`` as serving. What was shipped: version, users, steps, validation metrics, seconds."""
    from trainer.config import TrainConfig
    from trainer.history import serving_history
    from trainer.ship import fit_and_publish
    from trainer.simulate import SimConfig, Simulator

    sim = Simulator(SimConfig(seed=seed, n_users=demo_users + users, n_new_users=0, turns_min=turns,
                              turns_max=turns + 10))
    files = sim.write_gmtrouter(out)
    demo = {u.user_id for u in sim.users[:demo_users]}
    for split in ("train", "valid"):  # the demo's users are not the shipped model's
        lines = Path(files[split]).read_text().splitlines()
        Path(files[split]).write_text("".join(f"{line}\n" for line in lines if json.loads(line)["judge"] not in demo))
    shipped = fit_and_publish(files["train"], files["valid"], registry, TrainConfig(steps=steps, seed=seed),
                              serving_history(), files["catalog"], encoder=encoder, promote=True, progress=progress)
    return {"version": shipped.version, "users": users, "steps": steps, "valid": shipped.valid,
            "seconds": shipped.seconds}

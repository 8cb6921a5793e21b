"""The arms of bench/data_efficiency.py: each a name → (the training data: the "raw" pool, its
"clean" records, or a curated shard set of bench/common_demo.py's CURATED; the TrainConfig
options), per task; the recipe sweep (--sweep) and the ablations (--ablations)."""

from __future__ import annotations

ONLINE = {"mode": "learnability"}  # r and the rest: the trainer's defaults
WEIGHTED = {"mode": "weighted"}
CURATED_WEIGHTS = {"mode": "curated_weights"}
SMALL = {"score_image_size": 32, "small_share": 0.0}  # image-text: the student scores at 32 px

# name → (training data: "raw" pool or a curated shard set, TrainConfig options)
ARMS = {
    "lm": {
        "uniform": ("raw", {"mode": "uniform"}),
        "hard learner": ("raw", {**ONLINE, "mode": "hard_learner"}),
        "easy reference": ("offline", {"mode": "uniform"}),
        "learnability": ("scored", ONLINE),
        "offline + online": ("offline", ONLINE),
        "offline + weighted": ("offline", WEIGHTED),
        "offline + curated weights": ("offline", CURATED_WEIGHTS),
    },
    "contrastive": {
        "uniform": ("raw", {"mode": "uniform"}),
        "easy reference": ("offline", {"mode": "uniform"}),
        "offline + online": ("offline", ONLINE),
        "offline + weighted": ("offline", WEIGHTED),
        "offline + curated weights": ("offline", CURATED_WEIGHTS),
        "independent": ("scored", {**ONLINE, "n_chunks": 1}),
        "joint": ("scored", {**ONLINE, "n_chunks": 16}),
    },
}
ARMS["image-text"] = {
    **ARMS["contrastive"],
    "offline + online at 32 px": ("offline", {**ONLINE, **SMALL}),
}
ARMS["lm-documents"] = ARMS["lm"]
# the same arms with the softmax (CLIP) loss: the raw pool has no shards to say so
ARMS["image-text-softmax"] = {
    name: (source, {**options, "loss": "softmax"})
    for name, (source, options) in ARMS["image-text"].items()
}
# --sweep: the recipe's knobs, on every seed: r (the student scores r·b per step) and the share
# the offline pass keeps; image-text also the scoring size and the share of steps trained there.
SWEEP = {
    task: {
        f"{source} + online r={r}{extra}": (source, {**ONLINE, "super_batch_ratio": r, **more})
        for source in ("offline", "offline 30 %")
        for r in (2, 3, 5)
        for extra, more in (
            [("", {}), (" at 32 px", SMALL), (" at 32 px ½ trained", {**SMALL, "small_share": 0.5})]
            if task == "image-text"
            else [("", {})]
        )
    }
    for task in ("lm", "contrastive", "image-text", "lm-documents")
}
SWEEP["image-text-softmax"] = {}
# Run on the first seed only with --ablations: what the temperature and scoring length do, and
# the ceiling of filtering (uniform on the pool's clean records alone: an oracle). The arms above
# use the default, relative temperature; τ=… is an absolute one.
ABLATIONS = {
    "lm": {
        "learnability τ=1": ("scored", {**ONLINE, "temperature": 1.0}),
        "learnability τ=0.1": ("scored", {**ONLINE, "temperature": 0.1}),
        "learnability r=10": ("scored", {**ONLINE, "super_batch_ratio": 10}),
        "offline 30 %": ("offline 30 %", {"mode": "uniform"}),
        # the recipe when the teacher scores the first 64 tokens (and the student the same)
        "offline 30 % 64-token teacher": ("offline 30 % 64-token teacher", {"mode": "uniform"}),
        "offline 30 % 64-token teacher + online": ("offline 30 % 64-token teacher", ONLINE),
        "offline 20 %": ("offline 20 %", {"mode": "uniform"}),
        "offline 20 % + online": ("offline 20 %", ONLINE),
        "clean only (oracle)": ("clean", {"mode": "uniform"}),
    },
    "contrastive": {
        "independent τ=1": ("scored", {**ONLINE, "n_chunks": 1, "temperature": 1.0}),
        "joint τ=1": ("scored", {**ONLINE, "n_chunks": 16, "temperature": 1.0}),
        "joint τ=0.1": ("scored", {**ONLINE, "n_chunks": 16, "temperature": 0.1}),
        "joint 32 chunks": ("scored", {**ONLINE, "n_chunks": 32}),
        "offline 30 %": ("offline 30 %", {"mode": "uniform"}),
        "clean only (oracle)": ("clean", {"mode": "uniform"}),
    },
}
# image-text pools are tars: no oracle arm
ABLATIONS["image-text"] = {k: v for k, v in ABLATIONS["contrastive"].items() if v[0] != "clean"}
ABLATIONS["lm-documents"] = ABLATIONS["lm"]
ABLATIONS["image-text-softmax"] = {}

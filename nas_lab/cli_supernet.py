"""Temporary home of two rebuild commands until the artifact registry (nas_lab.artifacts) owns them."""

# Two runs: 12 sandwich epochs, then a warm restart from those weights with more random subnets per step.
SUPERNET_REBUILD = ("nas-lab train-supernet --epochs 12 --warmup-epochs 1 --threads 2 --out runs/supernet && "
                    "nas-lab export-supernet runs/supernet/checkpoint.pt && "
                    "nas-lab train-supernet --init-from data/supernet.safetensors --epochs 6 --warmup-epochs 0 "
                    "--lr 0.04 --num-random 4 --seed 1 --threads 2 --out runs/supernet_phase2 && "
                    "nas-lab export-supernet runs/supernet_phase2/checkpoint.pt")
DATASET_REBUILD = "nas-lab build-accuracy-dataset --n 2000 --seed 0"

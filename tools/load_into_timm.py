#!/usr/bin/env python3
"""Loads a fused checkpoint written by `repconv reparam` back into timm's
reparameterized MobileOne with strict=True (needs torch and timm).

    python tools/load_into_timm.py fused.safetensors [mobileone_s0]
"""
import sys

import timm
from safetensors.torch import load_file
from timm.utils.model import reparameterize_model


def main() -> None:
    path = sys.argv[1]
    arch = sys.argv[2] if len(sys.argv) > 2 else "mobileone_s0"
    model = reparameterize_model(timm.create_model(arch))
    model.load_state_dict(load_file(path), strict=True)
    print(f"{path} loads into {arch} (strict)")


if __name__ == "__main__":
    main()

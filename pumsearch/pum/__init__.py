"""Train your own Prefix Utility Model: label prefixes by student-group gain, build pairs, train.

    pumsearch pum label   policy trajectories -> prefixes cut at token lengths -> student rollouts
    pumsearch pum pairs   vertical and horizontal pairs with margins, ties and conflict filtering
    pumsearch pum train   LoRA (or head-only) Bradley-Terry training, exported in the zhiqix/PUM layout

See docs/pum-training.md. Heavy imports (torch, transformers, peft) happen only in ``train``.
"""

from __future__ import annotations

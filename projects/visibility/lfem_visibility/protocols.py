"""The visibility study's comparison profiles (``lfem-reid compare --profile visibility | visibility_pedestrians``):
the paper's Full model, each visibility part on top of it, then all of them; registered on import.
"""
from __future__ import annotations

from lfem_plugin.tools.protocols import (PEDESTRIANS, PEDESTRIANS_LFEM_CONFIG as _PED_LFEM, QUICK,
                                         QUICK_VIT_CONFIG as _QUICK_VIT, ModelSpec, Profile, register_profile)

__all__ = ["VISIBILITY", "VISIBILITY_PEDESTRIANS"]

# ---- visibility profile (issue 25; measured in the project's README): the visibility-aware LFEM's parts, one row each
# on top of the paper's Full model, then all of them, on the quick profile's ORL occluded proxy and ViT recipe; run
# with --seeds 0 1 2. Settings are chosen on a validation split of the training identities, never on the queries.
VISIBILITY = Profile(
    name="visibility",
    description=QUICK.description.split("; CNN")[0] + "; the paper's Full model and each visibility part on top of "
                "it (gate supervision 1.0, pasted occluders, stripes, whole-local gating), then all of them",
    common={"train.save_checkpoints": True, "train.checkpoint_period": 100},  # the last weights, for analyze-gates
    models=(
        ModelSpec("paper_full", "Full (paper)", _QUICK_VIT),
        ModelSpec("plus_supervision", "+gate supervision", _QUICK_VIT, {"lfem.gate_supervision": 1.0}),
        ModelSpec("plus_paste", "+pasted occluders", _QUICK_VIT, {"lfem.occluder": "paste"}),
        ModelSpec("plus_stripes", "+stripes", _QUICK_VIT, {"lfem.rearrange": False}),
        ModelSpec("plus_local_gate", "+whole-local gating", _QUICK_VIT, {"lfem.gate_scope": "local"}),
        ModelSpec("vis_all", "All (lfem_vit_vis)", _QUICK_VIT, {"model.name": "lfem_vit_vis_tiny"}),
        # the gate logit also reads the group's patch tokens (lfem.gate_input, block.py): with supervision
        # alone, and with every other part
        ModelSpec("plus_token_gate", "+supervision, token-read gate", _QUICK_VIT,
                  {"lfem.gate_supervision": 1.0, "lfem.gate_input": "relation_tokens"}),
        ModelSpec("vis_all_tokens", "All, token-read gate", _QUICK_VIT,
                  {"model.name": "lfem_vit_vis_tokens_tiny", "lfem.token_supervision": 0.0, "lfem.gate_grad": "all"}),
        # ... and each patch token's score trained against its own patch's visible fraction (lfem.token_supervision)
        ModelSpec("plus_token_supervision", "+supervision, token-read gate, per-token targets", _QUICK_VIT,
                  {"lfem.gate_supervision": 1.0, "lfem.gate_input": "relation_tokens", "lfem.token_supervision": 1.0}),
        ModelSpec("vis_all_token_sup", "All, token-read gate, per-token targets", _QUICK_VIT,
                  {"model.name": "lfem_vit_vis_tokens_tiny", "lfem.token_supervision": 1.0, "lfem.gate_grad": "all"}),
        # ... and the gate trained by the visibility losses alone (lfem.gate_grad visibility)
        ModelSpec("plus_gate_grad", "+supervision, token-read gate, per-token targets, gate by visibility only",
                  _QUICK_VIT, {"lfem.gate_supervision": 1.0, "lfem.gate_input": "relation_tokens",
                               "lfem.token_supervision": 1.0, "lfem.gate_grad": "visibility"}),
        ModelSpec("vis_all_gate_grad", "All, token-read gate, per-token targets, gate by visibility only",
                  _QUICK_VIT, {"model.name": "lfem_vit_vis_tokens_tiny", "lfem.token_supervision": 1.0,
                               "lfem.gate_grad": "visibility"}),
        # ... with pieces cut anywhere in another identity's image and resized in (lfem.occluder paste_resized), and
        # with the token score through one hidden layer (lfem.gate_input relation_tokens_mlp) and noise occluders, the
        # reading whose gate fell furthest on the validation split's noise-occluded queries (README.md)
        ModelSpec("vis_all_resized", "All (tokens), resized pieces", _QUICK_VIT,
                  {"model.name": "lfem_vit_vis_tokens_tiny", "lfem.occluder": "paste_resized"}),
        ModelSpec("vis_all_mlp", "All (tokens), MLP token score, noise occluders", _QUICK_VIT,
                  {"model.name": "lfem_vit_vis_tokens_mlp_tiny"}),
    ),
)
# The same rows on the pedestrians' recipe and data (CUHK03 camera pair 1; clean and occluded queries in one run).
VISIBILITY_PEDESTRIANS = Profile(
    name="visibility_pedestrians",
    description=PEDESTRIANS.description.split("; CNN")[0] + "; the paper's Full model and each visibility part on "
                "top of it, then all of them (lfem_vit_vis_tiny)",
    common={},
    models=tuple(ModelSpec(m.key, m.label, _PED_LFEM, m.changes) for m in VISIBILITY.models),
)
register_profile(VISIBILITY)
register_profile(VISIBILITY_PEDESTRIANS)

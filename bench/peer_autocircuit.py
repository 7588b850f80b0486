"""The peer side of ``python -m bench --only peer``: auto-circuit's EAP on the same model and prompts.

Runs in its own virtualenv (auto-circuit pins other versions), so it imports nothing from the atlas.
Usage: ``python peer_autocircuit.py DIR REPEATS`` where DIR holds ``config.json`` (HookedTransformer
config fields), ``model.pt`` (state dict) and ``prompts.pt`` (``clean``, ``corrupted``, ``answers``:
the answer token at the last position). Writes ``DIR/peer.json``: the median wall time of one EAP
call (auto-circuit's ``mask_gradient_prune_scores`` with ``grad_function="logit"``,
``answer_function="avg_val"``, ``mask_val=0``, which its docs state equals its EAP), the time to
wrap the model, and every edge's score keyed by auto-circuit's node names.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

import torch
from auto_circuit.data import PromptDataLoader, PromptDataset
from auto_circuit.prune_algos.mask_gradient import mask_gradient_prune_scores
from auto_circuit.utils.graph_utils import patchable_model
from transformer_lens import HookedTransformer, HookedTransformerConfig


def main() -> None:
    folder, repeats = Path(sys.argv[1]), int(sys.argv[2])
    torch.set_num_threads(int(sys.argv[3]) if len(sys.argv) > 3 else 2)
    model = HookedTransformer(HookedTransformerConfig(**json.loads((folder / "config.json").read_text())))
    # attention-mask buffers differ between TransformerLens lines (3.x saves them empty): rebuilt here
    state = {k: v for k, v in torch.load(folder / "model.pt", weights_only=True).items() if not k.endswith((".mask", ".IGNORE"))}
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert not unexpected and all(k.endswith((".mask", ".IGNORE")) for k in missing), (missing, unexpected)
    model.eval()
    model.cfg.use_attn_result = True
    model.cfg.use_split_qkv_input = True
    model.cfg.use_hook_mlp_in = True
    prompts = torch.load(folder / "prompts.pt", weights_only=True)
    clean, corrupt, answers = prompts["clean"], prompts["corrupted"], prompts["answers"]
    dataset = PromptDataset(list(clean), list(corrupt), [a.view(1) for a in answers], [a.view(1) for a in answers])
    loader = PromptDataLoader(dataset, seq_len=None, diverge_idx=0, batch_size=len(clean), shuffle=False)
    t0 = time.perf_counter()
    wrapped = patchable_model(model, factorized=True, slice_output="last_seq", separate_qkv=True, device=torch.device("cpu"))
    wrap_s = time.perf_counter() - t0

    def eap() -> dict:
        return mask_gradient_prune_scores(wrapped, loader, None, grad_function="logit", answer_function="avg_val", mask_val=0.0)

    scores = eap()  # warm-up, and the scores we report
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        eap()
        times.append(time.perf_counter() - t0)
    edges = [[e.src.name, e.dest.name, float(e.prune_score(scores))] for e in wrapped.edges]
    (folder / "peer.json").write_text(json.dumps({"seconds": statistics.median(times), "wrapSeconds": wrap_s, "edges": edges}))


if __name__ == "__main__":
    main()

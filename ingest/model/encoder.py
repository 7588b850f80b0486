"""BERT-style encoders (TransformerLens's ``HookedEncoder``): post-LN blocks, scored on the encoder's output.

A post-LN block normalises the stream *after* each sublayer::

    x_0 = embed(tokens)                       (token + position + segment embeddings, then a norm)
    m_l = x_l + sum_h head_lh(x_l) + b_O      (heads read x_l as it is: no norm before attention)
    n_l = ln1(m_l);  x_{l+1} = ln2(n_l + mlp_l(n_l))

so no later input is a sum of earlier outputs, and the pre-LN definition of an edge (``v`` reads
``u``'s output added to the stream) does not apply. The atlas uses the definition that reduces to
it when the norms are absent: the edge ``u -> v`` is ``u``'s effect on ``v``'s input through the
*wire*, the adds and norms between them, with every other component's output frozen at its clean
value. For each sender the wire is recomputed with only that output changed (a few norms per
layer: cheap), giving every receiver's input change ``d_v(u)``; then

- ``patching`` runs the clean model with only ``v``'s input moved by ``d_v(u)`` (a head's q/k/v
  through ``W_Q/W_K/W_V``: affine, so exact; an MLP's through ``W_in`` at ``hook_pre``; the output at
  the last block's ``hook_normalized_resid_post``), many edges per forward by tiling the prompts;
- ``eap`` scores ``g_v . J_v(u) delta_u``: the gradient at ``v``'s input times the wire's Jacobian
  applied to ``u``'s output change (a Jacobian-vector product), the first-order term of patching.

The metric reads the encoder's output: ``cosine``, the cosine similarity of the mean-pooled output
(a sentence embedding, as sentence-transformers computes it) with a target sentence's embedding
under the clean model. The output receiver is the graph's ``LOGITS`` node.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from atlas.errors import ModelError, TaskError, ValidationError
from atlas.frames import validate_edges
from atlas.schema import ComponentKind, Method
from ingest.model.graph import ModelGraph, Receiver, build_graph
from ingest.model.tasks import PromptBatch, prompt_pair, prompt_tokens, read_prompt_file

__all__ = ["BERT_ARCHITECTURES", "is_encoder", "is_encoder_folder", "load_encoder", "SimilarityTask", "encoder_graph",
           "compute_encoder_edges", "check_encoder_method", "sentence_embedding", "wire_inputs"]

BERT_ARCHITECTURES = frozenset({"BertModel", "BertForMaskedLM", "BertForPreTraining"})
_CHUNK = 256


def is_encoder(model: Any) -> bool:
    """Whether ``model`` is a TransformerLens ``HookedEncoder``."""
    from transformer_lens import HookedEncoder

    return isinstance(model, HookedEncoder)


def is_encoder_folder(path: Path) -> bool:
    """A Hugging Face folder holding a BERT model (config.json with ``model_type`` ``bert``)."""
    try:
        conf = json.loads((path / "config.json").read_text())
    except (OSError, json.JSONDecodeError):
        return False
    return isinstance(conf, dict) and conf.get("model_type") == "bert"


def _convert(hf: Any, n_heads: int) -> dict[str, torch.Tensor]:
    """TransformerLens ``HookedEncoder`` weights from a Hugging Face ``BertModel`` (the encoder only)."""
    emb = hf.embeddings
    state = {"embed.embed.W_E": emb.word_embeddings.weight, "embed.pos_embed.W_pos": emb.position_embeddings.weight,
             "embed.token_type_embed.W_token_type": emb.token_type_embeddings.weight,
             "embed.ln.w": emb.LayerNorm.weight, "embed.ln.b": emb.LayerNorm.bias}
    for l, layer in enumerate(hf.encoder.layer):
        att = layer.attention
        for name, lin in (("Q", att.self.query), ("K", att.self.key), ("V", att.self.value)):
            state[f"blocks.{l}.attn.W_{name}"] = lin.weight.reshape(n_heads, -1, lin.weight.shape[1]).transpose(1, 2)
            state[f"blocks.{l}.attn.b_{name}"] = lin.bias.reshape(n_heads, -1)
        out = att.output.dense
        state[f"blocks.{l}.attn.W_O"] = out.weight.T.reshape(n_heads, -1, out.weight.shape[0])
        state[f"blocks.{l}.attn.b_O"] = out.bias
        state[f"blocks.{l}.ln1.w"], state[f"blocks.{l}.ln1.b"] = att.output.LayerNorm.weight, att.output.LayerNorm.bias
        state[f"blocks.{l}.mlp.W_in"], state[f"blocks.{l}.mlp.b_in"] = layer.intermediate.dense.weight.T, layer.intermediate.dense.bias
        state[f"blocks.{l}.mlp.W_out"], state[f"blocks.{l}.mlp.b_out"] = layer.output.dense.weight.T, layer.output.dense.bias
        state[f"blocks.{l}.ln2.w"], state[f"blocks.{l}.ln2.b"] = layer.output.LayerNorm.weight, layer.output.LayerNorm.bias
    return {k: v.detach().clone() for k, v in state.items()}


def load_encoder(path: Path) -> Any:
    """A ``HookedEncoder`` from a Hugging Face BERT folder (``BertModel`` or ``BertForMaskedLM``,
    e.g. sentence-transformers' all-MiniLM-L6-v2), with the folder's tokenizer. Only the encoder's
    weights are loaded (the metric reads its output; MLM and pooler heads are not used)."""
    import warnings

    from transformer_lens import HookedEncoder, HookedTransformerConfig
    from transformers import AutoModel, AutoTokenizer

    from ingest.model.loading import quiet_transformers

    conf = json.loads((path / "config.json").read_text())
    arch = (conf.get("architectures") or ["BertModel"])[0]
    if conf.get("position_embedding_type", "absolute") != "absolute":
        raise ModelError(f"BERT with position_embedding_type={conf['position_embedding_type']!r} is not supported (absolute only)")
    if conf.get("hidden_act", "gelu") != "gelu":
        raise ModelError(f"BERT with hidden_act={conf['hidden_act']!r} is not supported (gelu only)")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            with quiet_transformers():
                hf = AutoModel.from_pretrained(path, local_files_only=True)  # the BertModel (a masked-LM folder: its encoder)
        except Exception as exc:
            raise ModelError(f"cannot load the BERT model in {path}: {' '.join(str(exc).split())[:300]}") from exc
        hf.eval()
        cfg = HookedTransformerConfig(
            d_model=conf["hidden_size"], d_head=conf["hidden_size"] // conf["num_attention_heads"], n_heads=conf["num_attention_heads"],
            d_mlp=conf["intermediate_size"], n_layers=conf["num_hidden_layers"], n_ctx=conf["max_position_embeddings"],
            eps=conf.get("layer_norm_eps", 1e-12), d_vocab=conf["vocab_size"], act_fn="gelu", attention_dir="bidirectional",
            original_architecture=arch if arch in BERT_ARCHITECTURES else "BertModel", device="cpu",
        )
        model = HookedEncoder(cfg, move_to_device=False)
        state = _convert(hf, cfg.n_heads)
        missing, unexpected = model.load_state_dict(state, strict=False)
        not_heads = [k for k in missing if not k.startswith(("mlm_head.", "unembed.", "nsp_head.", "pooler.")) and not k.endswith((".mask", ".IGNORE"))]
        if not_heads or unexpected:
            raise ModelError(f"the BERT weights in {path} do not fit the encoder: missing {not_heads[:3]}, unexpected {unexpected[:3]}")
        with torch.no_grad():  # the heads the metric never reads: zeros, not random draws, so the weights' hash is the folder's
            params = dict(model.named_parameters())
            for k in missing:
                if k in params:
                    params[k].zero_()
        try:
            model.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        except Exception:
            model.tokenizer = None
    model.eval()
    return model


def sentence_embedding(output: torch.Tensor) -> torch.Tensor:
    """Mean over positions of the encoder's output (prompts here are unpadded): ``[b, d_model]``."""
    return output.mean(dim=1)


@dataclass(frozen=True)
class SimilarityTask:
    """Prompts from a JSON file ``[{"clean": TEXT, "corrupted": TEXT, "target": TEXT}, ...]`` for an
    encoder: the metric is the cosine similarity of the prompt's sentence embedding to the target
    sentence's (the clean model's), e.g. a paraphrase whose match the corruption breaks. Clean and
    corrupted must tokenise to one length (token-id lists are accepted for them too)."""

    path: Path
    name: str = "similarity"
    description: str = "encoder prompts; metric: cosine of the sentence embedding to the target sentence's"

    def _tokens(self, model: Any, value: Any, what: str) -> list[int]:
        return prompt_tokens(model, value, what, lambda text: model.tokenizer(text)["input_ids"])

    def make_batch(self, model: Any, n_prompts: int, seed: int) -> PromptBatch:
        items = read_prompt_file(self.path)
        clean, corrupt, targets = [], [], []
        for i, item in enumerate(items[:n_prompts]):
            c, x = prompt_pair(item, i, self.path, lambda value, what: self._tokens(model, value, what))
            clean.append(c)
            corrupt.append(x)
            targets.append(self._tokens(model, item["target"], f"prompt {i} target"))
        if len({len(c) for c in clean}) != 1:
            raise TaskError(f"prompts in {self.path} have different lengths {sorted({len(c) for c in clean})}; give prompts of one token length")
        longest = max(len(c) for c in clean + targets)
        if longest > model.cfg.n_ctx:
            raise TaskError(f"prompts of {longest} tokens exceed the model context of {model.cfg.n_ctx}")
        with torch.no_grad():
            goal = torch.stack([sentence_embedding(model.encoder_output(torch.tensor([t])))[0] for t in targets])
        clean_t = torch.tensor(clean)
        ones = torch.ones_like(clean_t, dtype=torch.bool)
        return PromptBatch(clean_t, torch.tensor(corrupt), torch.zeros_like(clean_t), ones, {"target": goal})

    def metric(self, output: torch.Tensor, batch: PromptBatch) -> torch.Tensor:
        """Cosine similarity of each prompt's sentence embedding to its target's: ``[batch]``."""
        return torch.nn.functional.cosine_similarity(sentence_embedding(output), batch.meta["target"].to(output.dtype), dim=-1)


def encoder_graph(model: Any, model_id: str) -> ModelGraph:
    """Senders (embedding, heads, MLPs) and receivers (head q/k/v, MLPs, the output as ``LOGITS``)."""
    return build_graph(model, model_id, encoder=True)


# -- the wire ---------------------------------------------------------------------------------------


def sender_outputs(model: Any, graph: ModelGraph, tokens: torch.Tensor) -> torch.Tensor:
    """Every sender's output ``[b, p, s, d_model]``: the embedding's (after its norm), each head's
    ``z_h W_O[h]`` (the attention bias ``b_O`` is part of the wire) and each MLP's."""
    store: dict[str, torch.Tensor] = {}

    def grab(act: torch.Tensor, hook: Any) -> torch.Tensor:
        store[hook.name] = act.detach()
        return act

    names = ["hook_full_embed"] + [f"blocks.{l}.attn.hook_z" for l in range(graph.n_layers)] + [f"blocks.{l}.hook_mlp_out" for l in range(graph.n_layers)]
    with torch.no_grad():
        model.run_with_hooks(tokens, return_type=None, fwd_hooks=[(n, grab) for n in names])
    outs = [store["hook_full_embed"]]
    for l in range(graph.n_layers):
        outs.extend(torch.einsum("bphe,hed->bphd", store[f"blocks.{l}.attn.hook_z"], model.blocks[l].attn.W_O).unbind(dim=2))
        outs.append(store[f"blocks.{l}.hook_mlp_out"])
    stacked = torch.stack(outs, dim=2)
    assert stacked.shape[2] == len(graph.senders)
    return stacked


def wire_inputs(model: Any, graph: ModelGraph, outs: torch.Tensor) -> list[torch.Tensor]:
    """Every reading point's input computed from the senders' outputs ``[b, p, s, d]`` through the adds
    and norms alone: ``[x_0, n_0, x_1, n_1, ..., x_L]`` (``x_l`` read by layer ``l``'s heads, ``n_l`` by
    its MLP, ``x_L`` the output)."""
    x = outs[:, :, 0]
    points = []
    s = 1
    for l in range(graph.n_layers):
        block = model.blocks[l]
        points.append(x)
        m = x + outs[:, :, s: s + graph.n_heads].sum(dim=2) + block.attn.b_O
        s += graph.n_heads
        n = block.ln1(m)
        points.append(n)
        x = block.ln2(n + outs[:, :, s])
        s += 1
    points.append(x)
    return points


def _point(receiver: Receiver, n_layers: int) -> int:
    """Which entry of :func:`wire_inputs` a receiver reads."""
    if receiver.kind is ComponentKind.HEAD:
        return 2 * receiver.layer
    if receiver.kind is ComponentKind.MLP:
        return 2 * receiver.layer + 1
    return 2 * n_layers


def check_encoder_method(method: str) -> None:
    """Refuse a method the encoders do not offer, in one line."""
    if method not in (Method.EAP.value, Method.PATCHING.value):
        raise ValidationError(f"encoders are scored with eap or patching, not {method}: integrated gradients through post-LN wires are not offered")


def _check_supported(graph: ModelGraph, method: str) -> None:
    if any(r.kind not in (ComponentKind.HEAD, ComponentKind.MLP, ComponentKind.LOGITS) for r in graph.receivers):
        raise ValidationError("encoders are mapped at head granularity (neurons and dictionary features are not offered for post-LN blocks)")
    check_encoder_method(method)


def compute_encoder_edges(model: Any, graph: ModelGraph, task: SimilarityTask, batch: PromptBatch, method: str,
                          progress: Any = None, into: Callable[[Receiver], bool] | None = None) -> pd.DataFrame:
    """Edges of an encoder by ``method`` (``eap`` or ``patching``; see the module docstring); ``into``
    keeps only the edges into the receivers it accepts."""
    _check_supported(graph, method)
    model.eval()
    params = [(p, p.requires_grad) for p in model.parameters()]
    for p, _ in params:
        p.requires_grad_(False)
    try:
        with torch.no_grad():
            clean = sender_outputs(model, graph, batch.clean)
            corrupt = sender_outputs(model, graph, batch.corrupted)
            base = wire_inputs(model, graph, clean)
        if progress:
            progress(2)
        keep = into or (lambda r: True)
        if method == Method.EAP.value:
            return _eap(model, graph, task, batch, clean, corrupt - clean, keep, progress)
        return _patching(model, graph, task, batch, clean, corrupt, base, keep, progress)
    finally:
        for p, flag in params:
            p.requires_grad_(flag)


def _hooks_for(model: Any, receiver: Receiver) -> str:
    l = receiver.layer
    if receiver.kind is ComponentKind.HEAD:
        return f"blocks.{l}.attn.hook_{receiver.channel.value}"
    if receiver.kind is ComponentKind.MLP:
        return f"blocks.{l}.mlp.hook_pre"
    return f"blocks.{model.cfg.n_layers - 1}.hook_normalized_resid_post"


def _moved(model: Any, receiver: Receiver, d: torch.Tensor) -> torch.Tensor:
    """What adding ``d`` (``[..., p, d_model]``) to ``receiver``'s input adds at its hook."""
    if receiver.kind is ComponentKind.HEAD:
        attn = model.blocks[receiver.layer].attn
        w = {"q": attn.W_Q, "k": attn.W_K, "v": attn.W_V}[receiver.channel.value][receiver.head]
        return d @ w  # q = x W_Q + b_Q: affine, so the move is exact
    if receiver.kind is ComponentKind.MLP:
        return d @ model.blocks[receiver.layer].mlp.W_in
    return d


def _eap(model: Any, graph: ModelGraph, task: SimilarityTask, batch: PromptBatch, clean: torch.Tensor, delta: torch.Tensor,
         keep_receiver: Callable[[Receiver], bool], progress: Any) -> pd.DataFrame:
    store: dict[str, torch.Tensor] = {}

    def keep(act: torch.Tensor, hook: Any) -> torch.Tensor:
        act.retain_grad()
        store[hook.name] = act
        return act

    def leaf(act: torch.Tensor, hook: Any) -> torch.Tensor:  # the weights are frozen: gradients start here
        return act.detach().requires_grad_(True)

    names = sorted({_hooks_for(model, r) for r in graph.receivers})
    with torch.enable_grad():
        out = model.run_with_hooks(batch.clean, return_type=None, fwd_hooks=[("hook_full_embed", leaf)] + [(n, keep) for n in names])
        del out
        final = store[f"blocks.{graph.n_layers - 1}.hook_normalized_resid_post"]
        task.metric(final, batch).mean().backward()
    if progress:
        progress(1)
    score = np.zeros((len(graph.senders), len(graph.receivers)))
    scored = np.zeros(score.shape, dtype=bool)
    for s in graph.senders:
        direction = torch.zeros_like(clean)
        direction[:, :, s.index] = delta[:, :, s.index]
        _, moved = torch.func.jvp(lambda o: tuple(wire_inputs(model, graph, o)), (clean,), (direction,))
        for r in graph.receivers:
            if s.write_stage >= r.read_stage or not keep_receiver(r):
                continue
            d = moved[_point(r, graph.n_layers)]
            g = store[_hooks_for(model, r)].grad
            change = _moved(model, r, d)
            if r.kind is ComponentKind.HEAD:
                g = g[:, :, r.head]
            score[s.index, r.index] = float((g * change).sum())
            scored[s.index, r.index] = True
    return _frame(graph, score, scored)


def _patching(model: Any, graph: ModelGraph, task: SimilarityTask, batch: PromptBatch, clean: torch.Tensor, corrupt: torch.Tensor,
              base: list[torch.Tensor], keep_receiver: Callable[[Receiver], bool], progress: Any) -> pd.DataFrame:
    n_b = batch.clean.shape[0]
    last = f"blocks.{graph.n_layers - 1}.hook_normalized_resid_post"
    with torch.no_grad():
        ref = float(task.metric(model.encoder_output(batch.clean), batch).mean())
        changes: dict[int, list[torch.Tensor]] = {}  # sender -> input change at every reading point
        for s in graph.senders:
            outs = clean.clone()
            outs[:, :, s.index] = corrupt[:, :, s.index]
            changes[s.index] = [a - b for a, b in zip(wire_inputs(model, graph, outs), base, strict=True)]
    edges = [(s, r) for r in graph.receivers if keep_receiver(r) for s in graph.visible(r)]
    score = np.zeros((len(graph.senders), len(graph.receivers)))
    scored = np.zeros(score.shape, dtype=bool)
    for start in range(0, len(edges), _CHUNK):
        chunk = edges[start: start + _CHUNK]
        adds: dict[str, torch.Tensor] = {}
        for k, (s, r) in enumerate(chunk):
            name = _hooks_for(model, r)
            d = _moved(model, r, changes[s.index][_point(r, graph.n_layers)])
            if name not in adds:
                shape = (len(chunk) * n_b, *(d.shape[1:] if r.kind is not ComponentKind.HEAD else (d.shape[1], graph.n_heads, d.shape[2])))
                adds[name] = torch.zeros(shape, dtype=d.dtype)
            rows = slice(k * n_b, (k + 1) * n_b)
            if r.kind is ComponentKind.HEAD:
                adds[name][rows, :, r.head] += d
            else:
                adds[name][rows] += d
        tiled = PromptBatch(batch.clean.repeat(len(chunk), 1), batch.corrupted.repeat(len(chunk), 1), batch.targets.repeat(len(chunk), 1),
                            batch.mask.repeat(len(chunk), 1), {"target": batch.meta["target"].repeat(len(chunk), 1)})
        captured: dict[str, torch.Tensor] = {}

        def add(act: torch.Tensor, hook: Any) -> torch.Tensor:
            return act + adds[hook.name]

        def grab(act: torch.Tensor, hook: Any) -> torch.Tensor:
            captured["out"] = act
            return act

        with torch.no_grad():
            model.run_with_hooks(tiled.clean, return_type=None, fwd_hooks=[(n, add) for n in adds] + [(last, grab)])
            values = task.metric(captured["out"], tiled).reshape(len(chunk), n_b).mean(dim=1)
        for (s, r), v in zip(chunk, values.tolist(), strict=True):
            score[s.index, r.index] = v - ref
            scored[s.index, r.index] = True
        if progress:
            progress(len(chunk))
    return _frame(graph, score, scored)


def _frame(graph: ModelGraph, score: np.ndarray, scored: np.ndarray) -> pd.DataFrame:
    if (scored & ~np.isfinite(score)).any():
        raise ModelError("some encoder edge scores are not finite (NaN or Inf): the model's weights or activations hold NaN/Inf; nothing was written")
    src, dst = np.nonzero(scored)
    return validate_edges(pd.DataFrame({
        "componentId_pre": [graph.senders[i].component_id for i in src],
        "componentId_post": [graph.receivers[j].component_id for j in dst],
        "channel": [graph.receivers[j].channel.value for j in dst],
        "score": score[src, dst].astype(float),
    }))


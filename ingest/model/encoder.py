"""BERT-style encoders (TransformerLens's ``HookedEncoder``): loading a Hugging Face BERT folder, and
the similarity task that scores the encoder's output.

The metric reads the encoder's output: ``cosine``, the cosine similarity of the mean-pooled output
(a sentence embedding, as sentence-transformers computes it) with a target sentence's embedding
under the clean model. The output receiver is the graph's ``LOGITS`` node. How an encoder's edges
are scored (post-LN blocks, through the wire) is :mod:`ingest.edges.encoder`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from atlas.errors import ModelError, TaskError
from ingest.model.graph import ModelGraph, build_graph
from ingest.model.tasks import PromptBatch, prompt_pair, prompt_tokens, read_prompt_file

__all__ = ["BERT_ARCHITECTURES", "is_encoder_folder", "load_encoder", "SimilarityTask", "encoder_graph", "sentence_embedding"]

BERT_ARCHITECTURES = frozenset({"BertModel", "BertForMaskedLM", "BertForPreTraining"})


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
        if n_prompts < len(items):
            import sys

            print(f"atlas: note: using the first {n_prompts} of the {len(items)} prompts in {self.path} (--prompts)", file=sys.stderr)
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
        out = output.float() if output.dtype in (torch.float16, torch.bfloat16) else output  # accumulated in float32 at least
        return torch.nn.functional.cosine_similarity(sentence_embedding(out), batch.meta["target"].to(out.dtype), dim=-1)


def encoder_graph(model: Any, model_id: str) -> ModelGraph:
    """Senders (embedding, heads, MLPs) and receivers (head q/k/v, MLPs, the output as ``LOGITS``)."""
    return build_graph(model, model_id)

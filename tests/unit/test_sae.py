"""Sparse dictionaries: training quality, the sae-lens on-disk format, and feature-level edges."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from atlas.errors import ModelError, ValidationError
from ingest.edges.interface import sender_outputs
from ingest.edges.methods import MethodConfig, compute_eap, compute_eap_ig, compute_eap_ig_activations, compute_patching, select_features
from ingest.model.graph import build_graph
from ingest.model.sae import Dictionary, collect_activations, load_dictionary, load_for_model, save_dictionary, site_hooks, train_dictionary
from ingest.model.tasks import InductionTask
from tests.conftest import make_tiny, nearby_corruption

# stated thresholds, on held-out activations of modadd-1l's MLP (measured 0.028 and 0.055 at 128 features, 3000 steps)
FVU_MAX = {False: 0.05, True: 0.1}  # SAE on the MLP output; transcoder (predicting it from the input is harder)


@pytest.fixture(scope="module")
def modadd() -> object:
    from ingest.model.loading import load_model

    return load_model("modadd-1l", Path("/nonexistent-atlas-home")).model  # shipped weights


def _train(model: object, transcoder: bool, features: int = 128) -> Dictionary:
    from ingest.model.zoo import modadd_data

    tokens, _ = modadd_data()
    hook_in, hook_out = site_hooks(model, "blocks.0.hook_mlp_out", transcoder)
    x_in, x_out = collect_activations(model, tokens, hook_in, hook_out)
    return train_dictionary(x_in, x_out, features, hook_name=hook_in, hook_name_out=hook_out, model_name="modadd-1l",
                            dictionary_id="t", steps=3000, l1=0.1)


@pytest.mark.parametrize("transcoder", [False, True])
def test_trained_dictionary_reconstructs_sparsely_and_reloads_identically(modadd: object, tmp_path: Path, transcoder: bool) -> None:
    d = _train(modadd, transcoder)
    assert d.stats["fvu"] < FVU_MAX[transcoder], d.stats
    assert 0 < d.stats["l0"] < 0.35 * d.d_sae and d.stats["dead"] < d.d_sae // 4  # sparse, and mostly alive
    save_dictionary(d, tmp_path / "d")
    cfg = json.loads((tmp_path / "d" / "cfg.json").read_text())
    assert {"d_in", "d_sae", "hook_name", "apply_b_dec_to_input", "architecture", "metadata"} <= set(cfg)
    assert cfg["atlas_stats"]["fvu"] == d.stats["fvu"] and (cfg.get("hook_name_out") is not None) == transcoder
    from safetensors.torch import load_file

    assert set(load_file(str(tmp_path / "d" / "sae_weights.safetensors"))) == {"W_enc", "b_enc", "W_dec", "b_dec"}
    back = load_dictionary(tmp_path / "d")
    x = torch.randn(50, 64, generator=torch.Generator().manual_seed(0))
    assert torch.equal(back.encode(x), d.encode(x)) and torch.equal(back.decode(back.encode(x)), d.decode(d.encode(x)))
    assert back.is_transcoder == transcoder and back.dictionary_id == "t"


def test_dictionary_architectures_and_bad_folders(tmp_path: Path) -> None:
    w = torch.eye(3)
    pre = torch.tensor([[0.5, -1.0, 2.0]])
    jump = Dictionary(w, torch.zeros(3), w, torch.zeros(3), "blocks.0.hook_mlp_out", architecture="jumprelu",
                      apply_b_dec_to_input=False, threshold=torch.tensor([1.0, 0.0, 1.0]))
    assert jump.encode(pre).tolist() == [[0.0, 0.0, 2.0]]  # below threshold: off
    topk = Dictionary(w, torch.zeros(3), w, torch.zeros(3), "blocks.0.hook_mlp_out", architecture="topk", k=1, apply_b_dec_to_input=False)
    assert topk.encode(pre).tolist() == [[0.0, 0.0, 2.0]]
    with pytest.raises(ModelError, match="not a sae-lens folder"):
        load_dictionary(tmp_path / "nothing")
    save_dictionary(jump, tmp_path / "j")
    assert torch.equal(load_dictionary(tmp_path / "j").encode(pre), jump.encode(pre))
    cfg = json.loads((tmp_path / "j" / "cfg.json").read_text())
    (tmp_path / "j" / "cfg.json").write_text(json.dumps({**cfg, "architecture": "gated"}))
    with pytest.raises(ModelError, match="not supported"):
        load_dictionary(tmp_path / "j")


def _random_dictionaries(model: object, n: int = 12) -> dict[int, tuple[Dictionary, list[int]]]:
    """An SAE on layer 0's MLP output and a transcoder for layer 1's MLP, random weights."""
    gen = torch.Generator().manual_seed(3)
    d = model.cfg.d_model
    dt = model.W_E.dtype

    def rand(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=gen).to(dt)

    sae = Dictionary(rand(d, n) / d**0.5, rand(n) * 0.1, rand(n, d) / n**0.5, rand(d) * 0.1, "blocks.0.hook_mlp_out", dictionary_id="s")
    tc = Dictionary(rand(d, n), rand(n) * 0.1, rand(n, d) / n**0.5, rand(d) * 0.1, "blocks.1.hook_mlp_in",
                    hook_name_out="blocks.1.hook_mlp_out", apply_b_dec_to_input=False, dictionary_id="t")
    return {0: (sae, list(range(n))), 1: (tc, list(range(0, n, 2)))}


def _local(cid: str) -> str:
    return cid.rsplit("/", 1)[1]


def test_features_and_error_are_complete() -> None:
    """Per receiver, the features' edges plus the error's equal the MLP's edge (the error holds what
    the features leave out, including unselected features); into the error, what the MLP receives
    and its features do not. EAP-IG, an SAE on one layer and a transcoder with half its features on the next."""
    model = make_tiny(4)
    task = InductionTask(half=6)
    batch = task.make_batch(model, 6, 0)
    graph = build_graph(model, "f", features=_random_dictionaries(model))
    edges = compute_eap_ig(model, graph, task, batch, MethodConfig(steps=4))
    edges = edges.assign(pre=edges.componentId_pre.map(_local), post=edges.componentId_post.map(_local))
    checked = 0
    for layer, did in ((0, "s"), (1, "t")):
        parts = edges[edges.pre.str.match(rf"L{layer}\.(F\d+|ERR)@{did}$")]
        mlp = edges[edges.pre == f"L{layer}.MLP"].set_index(["post", "channel"])["score"]
        summed = parts.groupby(["post", "channel"])["score"].sum()
        assert set(summed.index) == set(mlp.index) and len(mlp) > (5 if layer == 0 else 0)
        assert torch.allclose(torch.tensor(summed.loc[mlp.index].to_numpy()), torch.tensor(mlp.to_numpy()), rtol=1e-4, atol=1e-6)
        error_share = parts[parts.pre.str.startswith(f"L{layer}.ERR")]["score"].abs().sum() / parts["score"].abs().sum()
        assert 0 < error_share < 1  # both the features and the error carry part of it
        into_mlp = edges[edges.post == f"L{layer}.MLP"].set_index("pre")["score"]
        into_parts = edges[edges.post.str.match(rf"L{layer}\.(F\d+|ERR)@{did}$")].groupby("pre")["score"].sum()
        assert torch.allclose(torch.tensor(into_parts.loc[into_mlp.index].to_numpy()), torch.tensor(into_mlp.to_numpy()), rtol=1e-4, atol=1e-6)
        checked += 1
    assert checked == 2
    assert len(edges[edges.pre.str.contains("@s") & edges.post.str.contains("@t")]) > 0  # feature -> feature across layers


def test_feature_receivers_match_finite_differences() -> None:
    """Edges into features (SAE: through the MLP; transcoder: through ln2) equal the first-order
    change of the metric when only that feature sees the sender's corrupted output (float64)."""
    model = make_tiny(4)
    model.to(torch.float64)
    task = InductionTask(half=6)
    batch = task.make_batch(model, 4, 1)
    dicts = _random_dictionaries(model)
    graph = build_graph(model, "f", features=dicts)
    eap = compute_eap(model, graph, task, batch).set_index(["componentId_pre", "componentId_post"])["score"]
    delta = sender_outputs(model, graph, batch.corrupted) - sender_outputs(model, graph, batch.clean)
    eps = 1e-6
    checked = 0
    for r in graph.receivers:
        if r.feature is None or r.feature % 3:
            continue
        sae = dicts[r.layer][0]
        for s in graph.visible(r)[:: max(1, len(graph.visible(r)) // 4)]:
            def hook(act: torch.Tensor, hook: object, r: object = r, s: object = s, sae: Dictionary = sae) -> torch.Tensor:
                x = store["mid"]
                def f_i(x_: torch.Tensor) -> torch.Tensor:
                    block = model.blocks[r.layer]
                    site = block.ln2(x_) if sae.is_transcoder else block.mlp(block.ln2(x_))
                    return sae.encode(site)[..., r.feature]
                change = f_i(x + eps * delta[:, :, s.index]) - f_i(x)
                return act + change[..., None] * sae.W_dec[r.feature]

            store: dict[str, torch.Tensor] = {}
            keep = (f"blocks.{r.layer}.hook_resid_mid", lambda a, hook: store.__setitem__("mid", a) or a)
            with torch.no_grad():
                base = task.metric(model(batch.clean), batch).mean()
                moved = task.metric(model.run_with_hooks(batch.clean, fwd_hooks=[keep, (f"blocks.{r.layer}.hook_mlp_out", hook)]), batch).mean()
            fd = float(moved - base) / eps
            score = float(eap[(s.component_id, r.component_id)])
            assert fd == pytest.approx(score, rel=1e-3, abs=1e-7), (s.component_id, r.component_id)
            checked += int(abs(score) > 1e-5)
    assert checked >= 10


def test_feature_selection_and_refusals() -> None:
    model = make_tiny(4)
    task = InductionTask(half=6)
    batch = task.make_batch(model, 4, 0)
    dicts = {layer: d for layer, (d, _) in _random_dictionaries(model).items()}
    chosen, scores = select_features(model, dicts, task, batch, 3)
    assert all(len(v) == 3 for v in chosen.values()) and scores["selected"].sum() == 6
    graph = build_graph(model, "f", features={l: (dicts[l], chosen[l]) for l in dicts})
    # EAP-IG over activations covers features too: interpolated MLP outputs feed the features' side branch
    act = compute_eap_ig_activations(model, graph, task, batch, MethodConfig(steps=3))
    act = act.assign(pre=act.componentId_pre.map(_local), post=act.componentId_post.map(_local))
    for layer in (0, 1):
        into_logits = act[act.post == "LOGITS"]
        parts = into_logits[into_logits.pre.str.match(rf"L{layer}\.(F\d+|ERR)@")]["score"].sum()
        assert parts == pytest.approx(float(into_logits[into_logits.pre == f"L{layer}.MLP"]["score"].iloc[0]), rel=1e-4)
    with pytest.raises(ValidationError, match="top-features"):
        select_features(model, dicts, task, batch, 0)


def test_load_for_model_checks_shapes(tmp_path: Path) -> None:
    model = make_tiny(4)
    sae, _ = _random_dictionaries(model)[0]
    save_dictionary(sae, tmp_path / "ok")
    assert list(load_for_model(model, "f", [str(tmp_path / "ok")])) == [0]
    with pytest.raises(ValidationError, match="two dictionaries"):
        load_for_model(model, "f", [str(tmp_path / "ok"), str(tmp_path / "ok")])
    wrong = Dictionary(torch.zeros(5, 4), torch.zeros(4), torch.zeros(4, 5), torch.zeros(5), "blocks.0.hook_mlp_out")
    save_dictionary(wrong, tmp_path / "wrong")
    with pytest.raises(ValidationError, match="dimensions"):
        load_for_model(model, "f", [str(tmp_path / "wrong")])
    resid = Dictionary(sae.W_enc, sae.b_enc, sae.W_dec, sae.b_dec, "blocks.1.hook_resid_pre")
    save_dictionary(resid, tmp_path / "resid")
    with pytest.raises(ValidationError, match="on an MLP"):
        load_for_model(model, "f", [str(tmp_path / "resid")])


def _feature_edges(frame: object) -> object:
    touch = frame.componentId_pre.str.contains("@") | frame.componentId_post.str.contains("@")
    return frame[touch].set_index(["componentId_pre", "componentId_post", "channel"])["score"]


def test_feature_patching_matches_eap_in_small_perturbation_limit() -> None:
    """In the small-perturbation limit EAP and exact patching agree on every edge into or out of a
    feature or error node (float64): the patching hooks and the gradient paths check each other."""
    model = make_tiny(4)
    near = nearby_corruption(model, 1e-4, n_prompts=3, length=10)
    dicts = _random_dictionaries(model)
    graph = build_graph(model, "f", features=dicts)
    task = InductionTask()
    est, exact = _feature_edges(compute_eap(model, graph, task, near)), _feature_edges(compute_patching(model, graph, task, near))
    assert len(exact) > 200 and set(est.index) == set(exact.index)
    err = float((est - exact.loc[est.index]).abs().max() / exact.abs().max())
    assert err < 1e-3, err


FEATURE_SPEARMAN_MIN = 0.75  # held on modadd-1l with a trained transcoder (measured 0.84; SAE on the output 0.77)


def test_feature_edges_rank_like_patching_on_a_trained_dictionary(modadd: object) -> None:
    """A real corruption on a trained model and dictionary: EAP-IG ranks the feature and error edges
    as exact patching does (threshold above)."""
    from scipy.stats import spearmanr

    from ingest.model.tasks import get_task

    tc = _train(modadd, transcoder=True)
    task = get_task("modadd")
    batch = task.make_batch(modadd, 16, 0)
    chosen, _ = select_features(modadd, {0: tc}, task, batch, 64)
    graph = build_graph(modadd, "m", features={0: (tc, chosen[0])})
    ig = _feature_edges(compute_eap_ig(modadd, graph, task, batch, MethodConfig(steps=5)))
    exact = _feature_edges(compute_patching(modadd, graph, task, batch))
    assert len(ig) > 100
    assert spearmanr(ig, exact.loc[ig.index])[0] >= FEATURE_SPEARMAN_MIN


def test_site_hooks_name_what_is_wrong() -> None:
    model = make_tiny(4)
    assert site_hooks(model, "blocks.1.hook_mlp_out", True) == ("blocks.1.hook_mlp_in", "blocks.1.hook_mlp_out")
    assert site_hooks(model, "blocks.1.hook_resid_pre", False) == ("blocks.1.hook_resid_pre", None)
    with pytest.raises(ValidationError, match="no hook"):
        site_hooks(model, "blocks.1.hook_nothing", False)
    with pytest.raises(ValidationError, match="MLP layer of the model"):
        site_hooks(model, "blocks.7.hook_mlp_out", True)
    with pytest.raises(ValidationError, match="attention only"):
        site_hooks(make_tiny(4, attn_only=True), "blocks.0.hook_mlp_out", True)


@pytest.mark.parametrize("name", ["std", "jump"])
def test_loads_what_sae_lens_writes(name: str) -> None:
    """Folders written by sae-lens 6.54.12 itself (``StandardSAE`` / ``JumpReLUSAE`` ``.save_model``, random
    weights, with sae-lens's own outputs on fixed inputs in ``check.pt``): we encode and decode as it does.
    (The other way round was checked by hand: sae-lens's ``SAE.load_from_disk`` reads our SAEs and
    transcoders and reproduces our outputs exactly.)"""
    folder = Path(__file__).resolve().parent.parent / "data" / "sae_lens_6.54" / name
    d = load_dictionary(folder)
    check = torch.load(folder / "check.pt", weights_only=True)
    assert d.architecture == ("standard" if name == "std" else "jumprelu") and d.hook_name == "blocks.0.hook_mlp_out"
    assert torch.allclose(d.encode(check["x"]), check["f"], atol=1e-6)
    assert torch.allclose(d.decode(d.encode(check["x"])), check["rec"], atol=1e-6)
    assert (check["f"] > 0).any() and (check["f"] == 0).any()  # the check exercises both sides of the activation

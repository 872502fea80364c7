"""AR-IIGCN (train.model), batching (train.batch) and the training step (train.objective)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from train.batch import collate
from train.config import config_from_dict
from train.data.corpus import Dialogue
from train.common import InputError
from train.graph import window_size
from train.model import ARIIGCN, ModelOutput
from train.objective import Objective

DIMS = {"text": 12, "audio": 9, "visual": 7}
MODS = {1: ["text"], 2: ["text", "audio"], 3: ["text", "audio", "visual"]}
C = 4


def make_cfg(modalities, **sections):
    raw = {"data": {"modalities": list(modalities)},
           "graph": {"past": 2, "future": 0},
           "model": {"hidden": 16, "classifier_hidden": 16, "gcn_layers": 2, "dropout": 0.1}}
    for k, v in sections.items():
        raw.setdefault(k, {}).update(v)
    return config_from_dict(raw)


def make_dialogue(rng, n, name="d", dims=DIMS):
    return Dialogue(id=name, split="train", speakers=[str(s) for s in rng.choice(["A", "B", "C"], n)],
                    labels=rng.integers(0, C, n).astype(np.int64),
                    features={m: rng.normal(size=(n, d)).astype(np.float32) for m, d in dims.items()})


def slice_dialogue(d, a, b):
    return Dialogue(id=f"{d.id}[{a}:{b}]", split=d.split, speakers=d.speakers[a:b], labels=d.labels[a:b],
                    features={m: x[a:b] for m, x in d.features.items()})


def model_and_batch(n_mod, seed=0, n_dialogues=3, **sections):
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    cfg = make_cfg(MODS[n_mod], **sections)
    dialogues = [make_dialogue(rng, int(rng.integers(2, 9)), f"d{i}") for i in range(n_dialogues)]
    return ARIIGCN(cfg, DIMS, C), collate(dialogues, cfg.data.modalities, cfg.graph), cfg, dialogues


# ---------------------------------------------------------------------------------------------
# batching

def test_collate_layout_and_missing_rows():
    rng = np.random.default_rng(0)
    cfg = make_cfg(MODS[2])
    d1, d2 = make_dialogue(rng, 3, "a"), make_dialogue(rng, 4, "b")
    d2.features["audio"][1, 0] = np.nan  # row 1 of dialogue b -> utterance 3 + 1 = 4 of the batch
    d1.labels[0] = -1
    b = collate([d1, d2], cfg.data.modalities, cfg.graph)
    n = 7
    assert b.lengths.tolist() == [3, 4] and b.labels[0] == -1 and b.num_nodes == 2 * n
    assert b.features["audio"].shape == (n, 9) and torch.isfinite(b.features["audio"]).all()
    assert b.features["audio"][4].abs().sum() == 0 and not b.present[4, 1] and b.present[4, 0]
    assert b.present.sum() == 2 * n - 1
    assert b.speakers.tolist()[:3] == d1.speaker_ids().tolist()
    src, dst = b.edge_index
    assert not ((src == n + 4) | (dst == n + 4)).any(), "masked node must have no edges"
    dialogue_of = lambda node: (node % n >= 3).long()  # noqa: E731
    assert (dialogue_of(src) == dialogue_of(dst)).all(), "no edge between dialogues"
    # batch node m*N + off + i  <->  dialogue node m*n_b + i
    from train.graph import build_graph
    ei, et = build_graph(d2.speaker_ids(), np.isfinite(np.stack([d2.features["text"][:, 0], d2.features["audio"][:, 0]], 1)),
                         cfg.graph.past, cfg.graph.future)
    mapped = {((s // 4) * n + 3 + s % 4, (t // 4) * n + 3 + t % 4, r) for (s, t), r in zip(ei.T.tolist(), et.tolist())}
    got = {(s, t, r) for s, t, r in zip(src.tolist(), dst.tolist(), b.edge_type.tolist()) if s % n >= 3}
    assert got == mapped


def test_collate_errors():
    rng = np.random.default_rng(0)
    cfg = make_cfg(MODS[3])
    d = make_dialogue(rng, 3, "no-visual")
    del d.features["visual"]
    with pytest.raises(InputError, match="no-visual.*no 'visual' features"):
        collate([d], cfg.data.modalities, cfg.graph)
    a, b = make_dialogue(rng, 3, "a"), make_dialogue(rng, 3, "b", dims={**DIMS, "text": 5})
    with pytest.raises(InputError, match="text features are 5-d"):
        collate([a, b], cfg.data.modalities, cfg.graph)


def test_model_rejects_wrong_dimension():
    model, _, cfg, _ = model_and_batch(2)
    d = make_dialogue(np.random.default_rng(1), 4, dims={**DIMS, "audio": 3})
    with pytest.raises(InputError, match="audio features are 3-d but the model expects 9-d"):
        model(collate([d], cfg.data.modalities, cfg.graph))


# ---------------------------------------------------------------------------------------------
# forward and losses

@pytest.mark.parametrize("n_mod", [1, 2, 3])
def test_forward_shapes(n_mod):
    model, batch, _, _ = model_and_batch(n_mod)
    n = batch.num_utterances
    out = model(batch)
    assert out.logits.shape == (n, C) and out.states.shape == (n_mod, n, 16) and out.generated.shape == (n_mod, n, 16)
    assert (out.judged is None) == (n_mod == 1)
    if n_mod > 1:
        assert out.judged.shape == (n_mod, n_mod, n)
    p = model.predict_proba(batch)
    assert p.shape == (n, C) and torch.allclose(p.sum(1), torch.ones(n), atol=1e-5)


@pytest.mark.parametrize("n_mod", [1, 3])
def test_use_graph_false_is_mlp_only(n_mod):
    model, batch, _, _ = model_and_batch(n_mod, model={"use_graph": False})
    assert model.gcn is None and not any("conv" in k for k in model.state_dict())
    assert model(batch).logits.shape == (batch.num_utterances, C)


@pytest.mark.parametrize("n_mod", [1, 2, 3])
def test_losses_finite_and_backprop_into_generators_and_discriminators(n_mod):
    model, batch, _, _ = model_and_batch(n_mod)
    losses = model.losses(model(batch), batch)
    assert set(losses) >= {"ce", "adv", "adv_d", "adv_g", "intra", "inter", "total"}
    assert all(torch.isfinite(v) for v in losses.values())
    assert losses["intra"] > 0
    if n_mod == 1:
        assert losses["adv"] == 0 and losses["inter"] == 0 and model.discriminator_parameters() == []
    else:
        assert losses["adv"] > 0 and losses["inter"] > 0
    losses["total"].backward()
    for name in ("projections", "generators", "gcn", "classifier") + (("adversary",) if n_mod > 1 else ()):
        grads = [p.grad for p in getattr(model, name).parameters()]
        assert all(g is not None for g in grads) and sum(g.abs().sum() for g in grads) > 0, name


def test_gradient_reversal_sign():
    """Under grl the generators receive the negated (lambda-scaled) gradient of the discriminator loss."""
    model, batch, _, _ = model_and_batch(2, adversarial={"schedule": "grl", "grl_lambda": 0.5}, model={"dropout": 0.0})
    gen = model._generate(batch.features, batch.present)
    direct = torch.autograd.grad(model.discriminator_loss(ModelOutput(None, None, gen, model.adversary.judge(gen)), batch),
                                 gen)[0]
    out = model(batch)
    reversed_ = torch.autograd.grad(model.losses(out, batch)["adv"], out.generated, retain_graph=True)[0]
    assert torch.allclose(reversed_, -0.5 * direct, atol=1e-6)


def test_paper_schedule_splits_the_gradients():
    """Under paper the generators get exactly the gradient of L_G (fool the OTHER modalities'
    discriminators) and the discriminators exactly that of L_D; grl differs from it."""
    from train.model.adversarial import discriminator_loss, generator_loss

    model, batch, _, _ = model_and_batch(3, model={"dropout": 0.0}, adversarial={"r1": 0.0})
    assert model.cfg.adversarial.schedule == "paper"
    out = model(batch)
    adv = model.losses(out, batch)["adv"]
    g_paper = torch.autograd.grad(adv, out.generated, retain_graph=True)[0]
    d_params = model.discriminator_parameters()
    d_paper = torch.autograd.grad(adv, d_params)
    gen = out.generated.detach().requires_grad_(True)
    g_want = torch.autograd.grad(generator_loss(model.adversary.judge(gen), batch.present), gen)[0]
    d_want = torch.autograd.grad(discriminator_loss(model.adversary.judge(gen.detach()), batch.present), d_params)
    assert torch.allclose(g_paper, g_want, atol=1e-7) and g_want.abs().sum() > 0
    assert all(torch.allclose(a, b, atol=1e-7) for a, b in zip(d_paper, d_want))
    # L_G is the OTHER discriminators' verdict only: a change to D_m's own score of g^m leaves it alone
    judged = model.adversary.judge(gen)
    bumped = judged.clone()
    for m in range(3):
        bumped[m, m] += 5.0
    assert torch.allclose(generator_loss(bumped, batch.present), generator_loss(judged, batch.present))
    # the R1 penalty (default on) reaches the discriminators only
    with_r1, _, _, _ = model_and_batch(3, model={"dropout": 0.0})
    with_r1.load_state_dict(model.state_dict())
    out_r = with_r1(batch)
    losses_r = with_r1.losses(out_r, batch)
    assert losses_r["adv_r1"] > 0
    assert torch.allclose(torch.autograd.grad(losses_r["adv"], out_r.generated, retain_graph=True)[0], g_want, atol=1e-7)
    assert not all(torch.allclose(a, b) for a, b in zip(torch.autograd.grad(losses_r["adv"], with_r1.discriminator_parameters()), d_want))
    grl, batch_g, _, _ = model_and_batch(3, adversarial={"schedule": "grl"}, model={"dropout": 0.0})
    grl.load_state_dict(model.state_dict())
    out_g = grl(batch_g)
    g_grl = torch.autograd.grad(grl.losses(out_g, batch_g)["adv"], out_g.generated)[0]
    assert not torch.allclose(g_grl, g_want, atol=1e-4)


def test_switches_turn_parts_off():
    model, batch, _, _ = model_and_batch(3, adversarial={"enabled": False}, contrastive={"intra": False, "inter": False})
    assert model.adversary is None and model.discriminator_parameters() == []
    losses = model.losses(model(batch), batch)
    assert losses["adv"] == 0 and losses["intra"] == 0 and losses["inter"] == 0
    assert torch.allclose(losses["total"], losses["ce"])


def test_unlabelled_utterances_are_ignored():
    model, batch, _, _ = model_and_batch(3)
    model.eval()
    base = model.losses(model(batch), batch)
    labels = batch.labels.clone()
    labels[::2] = -1
    batch.labels = labels
    masked = model.losses(model(batch), batch)
    keep = labels >= 0
    ce = torch.nn.functional.cross_entropy(model(batch).logits[keep], labels[keep])
    assert torch.allclose(masked["ce"], ce) and not torch.allclose(masked["ce"], base["ce"])
    batch.labels = torch.full_like(labels, -1)
    none = model.losses(model(batch), batch)
    assert none["ce"] == 0 and none["intra"] == 0 and none["inter"] == 0 and none["total"].requires_grad


# ---------------------------------------------------------------------------------------------
# training step

@pytest.mark.parametrize("schedule", ["paper", "grl", "alternating"])
def test_objective_step_updates_generators_and_discriminators(schedule):
    model, batch, cfg, _ = model_and_batch(3, adversarial={"schedule": schedule})
    obj = Objective(model, cfg, lr=1e-2)
    assert (obj.d_optimizer is not None) == (schedule == "alternating")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    stats = obj.step(batch)
    assert np.isfinite(stats["loss"]) and stats["loss"] == stats["total"]
    assert ("d_step" in stats) == (schedule == "alternating")
    after = model.state_dict()
    for part in ("projections.", "generators.", "adversary.", "gcn.", "classifier."):
        assert any(not torch.equal(before[k], after[k]) for k in after if k.startswith(part)), part
    # optimizer state round-trips
    obj2 = Objective(model, cfg, lr=1e-2)
    obj2.load_state_dict(obj.state_dict())
    assert obj2.optimizer.state_dict()["state"].keys() == obj.optimizer.state_dict()["state"].keys()


def test_alternating_generators_do_not_train_discriminators():
    """The main optimizer never holds discriminator parameters under the alternating schedule."""
    model, _, cfg, _ = model_and_batch(2, adversarial={"schedule": "alternating"})
    obj = Objective(model, cfg)
    main = {id(p) for g in obj.optimizer.param_groups for p in g["params"]}
    disc = {id(p) for p in model.discriminator_parameters()}
    assert disc and not (main & disc)
    assert main | disc == {id(p) for p in model.parameters()}


@pytest.mark.parametrize("schedule", ["paper", "grl", "alternating"])
def test_objective_under_ddp(tmp_path, schedule):
    """A single-process gloo DDP wrapper: steps run and match the unwrapped model's first step."""
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP

    model, batch, cfg, _ = model_and_batch(2, adversarial={"schedule": schedule}, model={"dropout": 0.0})
    twin, _, _, _ = model_and_batch(2, adversarial={"schedule": schedule}, model={"dropout": 0.0})
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'rdv'}", rank=0, world_size=1)
    try:
        net = DDP(model, find_unused_parameters=True)
        obj = Objective(net, cfg)
        first = obj.step(batch)
        after_first = {k: v.clone() for k, v in model.state_dict().items()}
        second = obj.step(batch)  # DDP is happy with the next iteration too
    finally:
        dist.destroy_process_group()
    ref = Objective(twin, cfg).step(batch)
    assert abs(first["loss"] - ref["loss"]) < 1e-5 and np.isfinite(second["loss"])
    assert all(torch.allclose(after_first[k], v, atol=1e-6) for k, v in twin.state_dict().items())


# ---------------------------------------------------------------------------------------------
# causality, masking, windows

@pytest.mark.parametrize("n_mod", [1, 3])
def test_causal_invariance(n_mod):
    model, _, cfg, _ = model_and_batch(n_mod)
    model.eval()
    rng = np.random.default_rng(3)
    d = make_dialogue(rng, 12)
    base = model.predict_proba(collate([slice_dialogue(d, 0, 8)], cfg.data.modalities, cfg.graph))
    changed = slice_dialogue(d, 0, 12)
    changed.features = {m: x.copy() for m, x in d.features.items()}
    for x in changed.features.values():
        x[8:] = rng.normal(size=x[8:].shape) * 5  # later utterances differ and more are appended
    changed.speakers = d.speakers[:8] + ["Z"] * 4
    longer = model.predict_proba(collate([changed], cfg.data.modalities, cfg.graph))
    assert torch.allclose(base, longer[:8], atol=1e-6)
    assert not torch.allclose(longer[8:], model.predict_proba(collate([d], cfg.data.modalities, cfg.graph))[8:])


def test_bidirectional_mode_sees_the_future():
    """Control for the causal test: with future > 0 a later utterance does change earlier outputs."""
    model, _, cfg, _ = model_and_batch(1, graph={"future": 2})
    model.eval()
    d = make_dialogue(np.random.default_rng(3), 10)
    p1 = model.predict_proba(collate([d], cfg.data.modalities, cfg.graph))
    d.features["text"][9] = np.random.default_rng(9).normal(size=d.features["text"].shape[1]) * 3
    p2 = model.predict_proba(collate([d], cfg.data.modalities, cfg.graph))
    assert not torch.allclose(p1[8], p2[8])


def test_masked_modality_values_do_not_matter():
    """A missing modality (NaN row) is out of the graph: whatever its values, outputs stay the same."""
    model, _, cfg, _ = model_and_batch(3)
    model.eval()
    rng = np.random.default_rng(4)
    dialogues = [make_dialogue(rng, 9, "a"), make_dialogue(rng, 6, "b")]
    dialogues[0].features["audio"][::3] = np.nan  # audio missing for every third utterance
    dialogues[0].features["visual"][1] = np.nan
    for m in DIMS:
        dialogues[1].features[m][4] = np.nan  # an utterance with nothing at all still gets a (prior) prediction
    batch = collate(dialogues, cfg.data.modalities, cfg.graph)
    assert batch.present.sum() == 3 * 15 - 3 - 1 - 3
    ref = model.predict_proba(batch)
    assert torch.isfinite(ref).all()
    for k, m in enumerate(batch.modalities):
        x = batch.features[m].clone()
        absent = ~batch.present[:, k]
        x[absent] = torch.randn(int(absent.sum()), x.shape[1]) * 1e6
        batch.features[m] = x
    assert torch.allclose(model.predict_proba(batch), ref, atol=1e-6)
    model.train()
    assert all(torch.isfinite(v) for v in model.losses(model(batch), batch).values())
    model.eval()
    # a present value does matter (the test can fail)
    batch.features["audio"][1] = torch.randn(batch.features["audio"].shape[1]) * 10
    assert not torch.allclose(model.predict_proba(batch)[1], ref[1])


@pytest.mark.parametrize("n_mod,past,layers", [(1, 2, 2), (3, 3, 2), (2, 1, 3)])
def test_window_reproduces_full_causal_run(n_mod, past, layers):
    """Each utterance classified from the window of its newest L*past+1 utterances equals the offline run."""
    model, _, cfg, _ = model_and_batch(n_mod, graph={"past": past}, model={"gcn_layers": layers})
    model.eval()
    rng = np.random.default_rng(11)
    d = make_dialogue(rng, 25)
    d.features[cfg.data.modalities[-1]][rng.random(25) < 0.3] = np.nan  # some missing rows too
    full = model.predict_proba(collate([d], cfg.data.modalities, cfg.graph))
    k = window_size(past, layers)
    windows = [slice_dialogue(d, max(0, t + 1 - k), t + 1) for t in range(25)]
    out = model.predict_proba(collate(windows, cfg.data.modalities, cfg.graph))
    last = torch.cumsum(collate(windows, cfg.data.modalities, cfg.graph).lengths, 0) - 1
    assert torch.allclose(out[last], full, atol=1e-5)
    # one utterance too few changes some result (the window size is tight)
    short = [slice_dialogue(d, max(0, t + 2 - k), t + 1) for t in range(25)]
    out_s = model.predict_proba(collate(short, cfg.data.modalities, cfg.graph))
    last_s = torch.cumsum(collate(short, cfg.data.modalities, cfg.graph).lengths, 0) - 1
    assert not torch.allclose(out_s[last_s], full, atol=1e-5)


def test_window_newest_utterance_bidirectional():
    model, _, cfg, _ = model_and_batch(2, graph={"past": 2, "future": 1})
    model.eval()
    d = make_dialogue(np.random.default_rng(2), 15)
    full = model.predict_proba(collate([d], cfg.data.modalities, cfg.graph))
    k = window_size(2, cfg.model.gcn_layers)
    win = model.predict_proba(collate([slice_dialogue(d, 15 - k, 15)], cfg.data.modalities, cfg.graph))
    assert torch.allclose(win[-1], full[-1], atol=1e-5)


@pytest.mark.parametrize("n_mod,use_graph", [(1, True), (3, True), (3, False)])
def test_dense_formulation_matches_pyg(n_mod, use_graph):
    """The documented dense math (what export uses) equals the PyG RGCN model."""
    from train.model.rgcn import row_normalised_adjacency

    model, batch, cfg, _ = model_and_batch(n_mod, graph={"future": 1}, model={"use_graph": use_graph})
    model.eval()
    present = batch.present.clone()
    present[::4, -1] = False
    batch.present = present
    adj = row_normalised_adjacency(batch.edge_index, batch.edge_type, batch.num_nodes, model.num_relations)
    assert adj.shape == (model.num_relations, batch.num_nodes, batch.num_nodes)
    with torch.no_grad():
        assert torch.allclose(model.forward_dense(batch.features, batch.present, adj), model(batch).logits, atol=1e-5)


def test_label_out_of_range_is_a_clear_error():
    model, batch, _, _ = model_and_batch(1)
    batch.labels = batch.labels.clone()
    batch.labels[0] = C
    with pytest.raises(InputError, match=f"label id {C} but the model has {C} classes"):
        model.losses(model(batch), batch)

"""Graph model export: dense step == PyG model, ONNX parity, INT8 agreement, backends, bad input."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
torch = pytest.importorskip("torch")

from tests.train_fixtures import tiny_config, write_config, write_dialoguernn_iemocap  # noqa: E402
from train.common import InputError  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
MODS = ("text", "audio", "visual")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A small 3-modality causal model trained with the project's command, and its export."""
    from export.__main__ import main as export_main
    from train.__main__ import main as train_main

    tmp = tmp_path_factory.mktemp("export_model")
    data = write_dialoguernn_iemocap(tmp / "full.pkl", n_train=20, n_test=8, noise=0.8, seed=3)
    cfg = write_config(tmp / "cfg.yaml", tiny_config(modalities=MODS, train={"epochs": 8}))
    model = tmp / "model"
    assert train_main(["--config", str(cfg), "--data", str(data), "--out", str(model), "--no-progress"]) == 0
    assert export_main(["--model", str(model), "--int8", "--int8-method", "static", "--fp16", "--data", str(data), "--calib", "16"]) == 0
    return tmp, data, model, model / "export"


def _with_gaps(dialogues, seed=0):
    """Copies of the dialogues' features with some audio/visual rows missing (NaN)."""
    rng = np.random.default_rng(seed)
    for d in dialogues:
        d.features = {m: f.copy() for m, f in d.features.items()}
        for m in ("audio", "visual"):
            d.features[m][rng.random(len(d)) < 0.25] = np.nan
    return dialogues


def _torch_probs(model, cfg, dialogues):
    from train.backends import predict_dialogues

    return predict_dialogues(model, dialogues, cfg, "cpu")


@pytest.mark.parametrize(
    "graph,model_cfg",
    [
        ({"past": 2, "future": 0}, {}),
        ({"past": 3, "future": 2}, {"gcn_layers": 2}),  # bidirectional, 2 layers
        ({"past": 2, "future": 0, "speaker_relations": False, "inter_modal": False}, {}),
        ({"past": 2, "future": 0}, {"use_graph": False}),
    ],
)
def test_dense_step_matches_pyg_model(graph, model_cfg):
    """Same parameters, same inputs: the dense masked GCN equals PyG's RGCNConv model to 1e-5."""
    from export.graph_inputs import step_feeds
    from export.graph_model import DenseStep, graph_spec
    from train.config import config_from_dict
    from train.data.corpus import Dialogue
    from train.model import ARIIGCN
    from train.model_dir import ModelManifest

    torch.manual_seed(0)
    cfg = config_from_dict(tiny_config(modalities=MODS, graph=graph, model=model_cfg))
    dims = {"text": 10, "audio": 7, "visual": 5}
    model = ARIIGCN(cfg, dims, 4).eval()
    manifest = ModelManifest("t", "iemocap", list("abcd"), dims, {}, cfg.graph.past, cfg.graph.future)
    spec = graph_spec(model, manifest, 32)
    rng = np.random.default_rng(1)
    dialogues = []
    for k, n in enumerate((1, 5, 13)):
        feats = {m: rng.standard_normal((n, d)).astype(np.float32) for m, d in dims.items()}
        dialogues.append(Dialogue(f"d{k}", "valid", [str(s) for s in rng.integers(0, 3, n)], np.zeros(n, np.int64), features=feats))
    dialogues = _with_gaps(dialogues)
    dialogues[2].features["text"][4] = np.nan  # an utterance with only some modalities
    dialogues[2].features["audio"][4] = np.nan
    dialogues[2].features["visual"][4] = np.nan  # ... and one with none at all
    ref = _torch_probs(model, cfg, dialogues)
    step = DenseStep(model)
    for d, r in zip(dialogues, ref):
        feeds = step_feeds(spec, d.features, d.speaker_ids())
        with torch.no_grad():
            got = step(*[torch.from_numpy(feeds[n]) for n in spec.input_names()]).numpy()
        assert got.shape == r.shape
        assert np.abs(got - r).max() <= 1e-5


def test_export_writes_files_and_manifest(trained):
    from export.manifest import read_export_manifest

    _, _, model, out = trained
    m = read_export_manifest(out)
    assert set(m.files) == {"graph.onnx", "graph.int8.onnx", "graph.fp16.onnx"}
    assert {n: e.precision for n, e in m.files.items()} == {"graph.onnx": "fp32", "graph.int8.onnx": "int8", "graph.fp16.onnx": "fp16"}
    assert m.files["graph.int8.onnx"].details["method"] == "static-qdq"
    assert m.files["graph.int8.onnx"].details["calibration_conversations"] == 16
    assert m.opset == 17 and m.window == 32
    assert m.labels == json.loads((model / "manifest.json").read_text())["labels"]
    assert set(m.extractors) == set(MODS)
    g = m.parity["graph"]
    assert g["onnx"]["max_abs_diff"] <= 1e-4
    assert g["onnx-int8"]["label_agreement"] >= 99.0 and g["onnx-int8"]["weighted_f1_drop"] <= 0.5
    # The INT8 model really is quantised (QDQ pairs), the FP16 one really float16.
    import onnx

    ops = {n.op_type for n in onnx.load(str(out / "graph.int8.onnx")).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    assert onnx.TensorProto.FLOAT16 in {i.data_type for i in onnx.load(str(out / "graph.fp16.onnx")).graph.initializer}


def test_static_int8_keeps_activation_products_float(trained):
    """Only products with a weight are quantised: ``Â_r @ X`` (two activations) reads float inputs."""
    import onnx

    from export.quantize import _activation_products

    _, _, _, out = trained
    products = set(_activation_products(out / "graph.onnx"))
    assert products  # the GCN's neighbour aggregation, one per layer
    q = onnx.load(str(out / "graph.int8.onnx")).graph
    made_by = {o: n.op_type for n in q.node for o in n.output}
    matmuls = [n for n in q.node if n.op_type in ("MatMul", "Gemm")]
    for n in matmuls:
        dq = [made_by.get(i) == "DequantizeLinear" for i in n.input[:2]]
        assert not any(dq) if n.name in products else all(dq) or n.name.startswith("/classifier"), (n.name, dq)


def test_default_int8_is_dynamic_smaller_and_agrees(trained, tmp_path):
    """``--int8`` alone: dynamic INT8 (weights int8 per channel, including the 2-D relation
    weights), parity printed into the manifest and within the issue's bounds."""
    import onnx

    from export.__main__ import main as export_main
    from export.manifest import read_export_manifest

    _, data, model, _ = trained
    out = tmp_path / "dyn"
    assert export_main(["--model", str(model), "--out", str(out), "--int8", "--data", str(data)]) == 0
    m = read_export_manifest(out)
    assert m.files["graph.int8.onnx"].details["method"] == "dynamic"
    p = m.parity["graph"]["onnx-int8"]
    assert p["label_agreement"] >= 99.0 and p["weighted_f1_drop"] <= 0.5
    ops = {n.op_type for n in onnx.load(str(out / "graph.int8.onnx")).graph.node}
    assert "DynamicQuantizeLinear" in ops
    assert m.files["graph.int8.onnx"].bytes < m.files["graph.onnx"].bytes


def test_parity_on_the_first_validation_conversations(trained, tmp_path):
    """``--parity-dialogues N`` (what set-up uses): parity over exactly the first N validation
    conversations, and the manifest says so; a negative N is refused by the CLI."""
    from export.__main__ import main as export_main
    from export.manifest import read_export_manifest
    from train.data import load_corpus

    _, data, model, _ = trained
    out = tmp_path / "few"
    assert export_main(["--model", str(model), "--out", str(out), "--int8", "--data", str(data), "--parity-dialogues", "2"]) == 0
    m = read_export_manifest(out)
    first = load_corpus(str(data)).split("valid")[:2]
    assert m.parity["split"] == "valid (first 2 conversations)"
    assert m.parity["graph"]["onnx"]["utterances"] == sum(len(d) for d in first)
    with pytest.raises(SystemExit):
        export_main(["--model", str(model), "--out", str(tmp_path / "neg"), "--parity-dialogues", "-1"])
    assert not (tmp_path / "neg").exists()


def test_onnx_backends_match_torch_on_all_splits(trained):
    """FP32 ONNX within 1e-4 of torch, also with missing modality rows; INT8 (calibrated on the
    training conversations) agrees with torch on >= 99% of labels over every split."""
    from export.backends import load_backend
    from train.data import load_corpus
    from train.model_dir import load_model

    _, data, model_dir, _ = trained
    model, _, cfg = load_model(model_dir)
    dialogues = load_corpus(data).dialogues
    gappy = _with_gaps(load_corpus(data).dialogues, seed=5)
    onnx_be = load_backend(model_dir, "onnx")
    for ds in (dialogues, gappy):
        ref = np.concatenate(_torch_probs(model, cfg, ds))
        fp32 = np.concatenate(onnx_be.predict(ds))
        assert fp32.shape == ref.shape
        assert np.abs(fp32 - ref).max() <= 1e-4
    ref = np.concatenate(_torch_probs(model, cfg, dialogues))
    int8 = np.concatenate(load_backend(model_dir, "onnx-int8").predict(dialogues))
    assert (int8.argmax(1) == ref.argmax(1)).mean() >= 0.99


def test_evaluate_cli_with_exported_backends(trained, capsys):
    """python -m export.evaluate: train's scoring with the exported backends; train.evaluate has torch only."""
    from export.evaluate import main
    from train.evaluate import main as train_main

    _, data, model, _ = trained
    reports = {}
    for backend in ("torch", "onnx", "onnx-int8"):
        assert main(["--model", str(model), "--data", str(data), "--split", "test", "--json", "--backend", backend]) == 0
        reports[backend] = json.loads(capsys.readouterr().out)
    assert reports["onnx"]["weighted_f1"] == pytest.approx(reports["torch"]["weighted_f1"], abs=1e-9)
    assert reports["onnx"]["n"] == reports["torch"]["n"] > 0
    assert reports["torch"]["weighted_f1"] - reports["onnx-int8"]["weighted_f1"] <= 0.5
    from train.common import run_cli

    assert run_cli(train_main, ["--model", str(model), "--data", str(data), "--split", "test", "--backend", "onnx"]) == 2
    assert "unknown backend 'onnx'; available: torch" in capsys.readouterr().err


def test_step_api_and_wrong_feature_dimension(trained):
    from export.backends import OnnxBackend
    from train.data import load_corpus

    _, data, model, out = trained
    be = OnnxBackend(export_dir=out)
    d = load_corpus(data).split("test")[0]
    feats = {m: d.features[m][:4] for m in MODS}
    probs = be.step(feats, d.speakers[:4])  # speaker names are fine
    assert probs.shape == (4, 6) and np.allclose(probs.sum(1), 1.0, atol=1e-5)
    bad = dict(feats, audio=np.zeros((4, 99), np.float32))
    with pytest.raises(InputError, match="audio features are 99-d but the model expects 12-d"):
        be.step(bad, d.speakers[:4])
    d.features["text"] = np.zeros((len(d), 5), np.float32)
    with pytest.raises(InputError, match="text features are 5-d but the model expects"):
        be.predict([d])


def test_runs_without_torch(trained):
    """The live runtime's path: export backends + manifest with torch unavailable."""
    _, _, _, out = trained
    code = (
        "import sys, numpy as np; sys.modules['torch'] = None; sys.modules['torch_geometric'] = None\n"
        "from export.backends import OnnxInt8Backend\n"
        f"be = OnnxInt8Backend(export_dir={str(out)!r})\n"
        "f = {m: np.random.default_rng(0).standard_normal((3, d)).astype(np.float32) for m, d in be.spec.dims.items()}\n"
        "print(be.step(f, [0, 1, 0]).shape, be.manifest.labels[0])\n"
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "(3, 6) happy" in r.stdout


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "export", *map(str, args)], cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_model_dir_without_weights(trained, tmp_path):
    _, _, model, _ = trained
    broken = tmp_path / "noweights"
    shutil.copytree(model, broken, ignore=shutil.ignore_patterns("export", "model.safetensors"))
    r = _cli("--model", broken, "--out", tmp_path / "out")
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [f"error: {broken}: model directory is missing model.safetensors"]
    assert not (tmp_path / "out").exists()


def test_trt_without_tensorrt_is_one_clear_error(trained, tmp_path):
    try:
        import tensorrt  # noqa: F401
        pytest.skip("TensorRT is installed here")
    except ImportError:
        pass
    _, _, model, _ = trained
    r = _cli("--model", model, "--out", tmp_path / "trt", "--trt")
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "TensorRT is not installed" in lines[0] and "JetPack" in lines[0]
    assert not (tmp_path / "trt").exists()


def test_manifest_mismatch_other_model_version(trained, tmp_path):
    """An export from another version of the model is refused, naming both versions."""
    from export.backends import load_backend

    _, _, model, _ = trained
    changed = tmp_path / "changed"
    shutil.copytree(model, changed)
    from safetensors.numpy import load_file, save_file

    state = load_file(str(changed / "model.safetensors"))
    key = next(iter(state))
    state[key] = state[key] + 0.01  # "retrained"
    save_file(state, str(changed / "model.safetensors"))
    with pytest.raises(InputError, match="export was made from model version .* re-export it: .*python -m export"):
        load_backend(changed, "onnx")


def test_manifest_mismatch_swapped_file(trained, tmp_path):
    """A graph file from another export dropped into this one is refused."""
    from export.backends import OnnxBackend

    _, _, _, out = trained
    other = tmp_path / "other"
    shutil.copytree(out, other)
    (other / "graph.onnx").write_bytes((out / "graph.fp16.onnx").read_bytes())
    with pytest.raises(InputError, match="graph.onnx does not match the export manifest"):
        OnnxBackend(export_dir=other)
    (other / "manifest.json").write_text(json.dumps({"format": "ariigcn-model"}))
    with pytest.raises(InputError, match="not an ariigcn-export manifest"):
        OnnxBackend(export_dir=other)


def test_backend_without_export(tmp_path, trained):
    from export.backends import load_backend

    _, _, model, _ = trained
    bare = tmp_path / "bare"
    shutil.copytree(model, bare, ignore=shutil.ignore_patterns("export"))
    with pytest.raises(InputError, match="no ONNX export for this model"):
        load_backend(bare, "onnx-int8")


def test_text_extractor_absent_from_export(trained):
    """The synthetic model's features are precomputed: no text encoder in its export, said clearly."""
    from export.backends import OnnxBackend

    with pytest.raises(InputError, match=r"text features \(precomputed\) have no exported \(onnx\) encoder"):
        OnnxBackend(export_dir=trained[3]).text_extractor()


def test_bench_runs_and_reports_every_backend(trained, capsys):
    """Smoke run of ``python -m export.bench`` (figures are printed, not asserted)."""
    from export.bench import main

    _, data, model, out = trained
    assert main(["--model", str(model), "--export", str(out), "--data", str(data), "--n", "3", "--skip-text", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)["graph"]
    assert set(res["latency"]) == {"torch", "onnx", "onnx-int8", "int8-dyn"}
    assert set(res["latency"]["onnx"]) == {"1", "8", "32"}
    assert res["parity"]["onnx"]["max_abs_diff"] <= 1e-4


def test_bench_uses_the_models_own_export(trained, capsys):
    """Without --export the bench times the export the runtime loads (<model>/export), not a fresh one."""
    from export.bench import main

    _, data, model, out = trained
    assert main(["--model", str(model), "--data", str(data), "--n", "3", "--skip-text", "--json"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["export"] == str(out)
    assert f"own export {out}" in captured.err

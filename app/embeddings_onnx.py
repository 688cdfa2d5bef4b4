"""A sentence-transformers model on ONNX Runtime: about three times faster than torch for one
query on a CPU, for the same weights.

The export is made once per model, by the first process that needs it, into
``<models_dir>/onnx/<identity>-<fingerprint>`` (the fingerprint covers the model folder's files,
so other weights under the same name get an export of their own): the whole pipeline
(transformer, pooling, normalisation) traced from torch, with the tokenizer beside it. Before
it is kept, its vectors are compared with torch's on ``PROBES`` (one at a time and padded in
one batch, past the length limit included); the lowest cosine is written into the manifest,
and an export under ``MIN_COSINE`` is never used. That check is what lets both backends record
the same model identity (``embedding_space``): vectors of either are the same vectors, so a
database never holds two kinds under one name. The export runs in a child process (torch is
needed only there), and later starts load the export and the tokenizer only: a process
embedding on ONNX Runtime never imports torch.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from app.bundled import lock
from app.embeddings_torch import TorchEncoder, load_torch_model

logger = logging.getLogger(__name__)

EXPORT_VERSION = 1  # bump when the export's layout or graph changes: older ones are remade
MIN_COSINE = 0.999
MANIFEST = "manifest.json"
ONNX_FILE = "model.onnx"
OPSET = 17
TOKEN_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
FIELDS = {"input_ids": "ids", "attention_mask": "attention_mask", "token_type_ids": "type_ids"}
TOKENIZER_FILE = "tokenizer.json"
OUTPUT = "sentence_embedding"
PROBES = (
    "What did Caroline research?",
    "I went to the LGBTQ support group yesterday and it was so powerful.",
    "Melanie painted a sunrise over the lake in 2022; she sold it for $350.",
    "",
    "ok",
    "Zoë moved from São Paulo to Zürich — 東京 next?",
    # Past every bundled model's token limit: the truncation must be the same.
    " ".join(f"On day {day} we walked to the harbour and talked about the boats." for day
             in range(60)),
)


class OnnxUnavailable(RuntimeError):
    """The model cannot run on ONNX Runtime here; the message says why."""


@dataclass
class OnnxEncoder:
    """The exported pipeline and its tokenizer. Texts are sorted by length and cut into
    batches, so a batch pads to about its own longest text."""

    session: Any  # onnxruntime.InferenceSession
    tokenizer: Any  # tokenizers.Tokenizer, truncating and padding
    inputs: tuple[str, ...]
    lower_case: bool
    size: int
    backend: str = "onnx"

    @property
    def dimension(self) -> int:
        return self.size

    def encode(self, texts: list[str], batch_size: int) -> npt.NDArray[np.float32]:
        out = np.empty((len(texts), self.size), dtype=np.float32)
        order = np.argsort([-len(text) for text in texts], kind="stable")
        for start in range(0, len(texts), batch_size):
            rows = order[start:start + batch_size]
            chunk = [texts[row].lower() if self.lower_case else texts[row] for row in rows]
            encoded = self.tokenizer.encode_batch(chunk)
            feeds = {name: np.array([getattr(one, FIELDS[name]) for one in encoded],
                                    dtype=np.int64) for name in self.inputs}
            (vectors,) = self.session.run([OUTPUT], feeds)
            out[rows] = vectors
        out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
        return out


def load_onnx_encoder(folder: str, identity: str, models_dir: Path,
                      threads: int) -> OnnxEncoder:
    """The export of the model in ``folder``, made first when there is none; raises
    ``OnnxUnavailable`` when ONNX Runtime is missing, the model cannot be exported, or its
    export's vectors are not torch's."""
    try:
        import onnxruntime  # noqa: F401
    except ImportError as exc:
        raise OnnxUnavailable("onnxruntime is not installed") from exc
    target = export_folder(folder, identity, models_dir)
    if not (target / MANIFEST).is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        with lock(models_dir):
            if not (target / MANIFEST).is_file():
                _export(folder, target, threads)
    manifest = json.loads((target / MANIFEST).read_text())
    if manifest["min_cosine"] < MIN_COSINE:
        raise OnnxUnavailable(
            f"the ONNX export of {identity} gives vectors whose cosine with torch's is "
            f"{manifest['min_cosine']:.5f} (under {MIN_COSINE}); it is not used")
    return open_export(target, manifest, threads)


def export_folder(folder: str, identity: str, models_dir: Path) -> Path:
    """Where the export of the model in ``folder`` is kept: named by the model's identity and
    a fingerprint of its files (names, sizes, modification times) and of the export format."""
    digest = hashlib.sha256(f"v{EXPORT_VERSION}".encode())
    root = Path(folder)
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root)
        if path.is_file() and relative.parts[0] not in ("onnx", "openvino"):
            stat = path.stat()
            digest.update(f"{relative}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return models_dir / "onnx" / f"{identity}-{digest.hexdigest()[:16]}"


def open_export(target: Path, manifest: dict[str, Any], threads: int) -> OnnxEncoder:
    import onnxruntime
    from tokenizers import Tokenizer

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    # Idle workers would spin on cores the event loop and Postgres need.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = onnxruntime.InferenceSession(str(target / ONNX_FILE), options,
                                           providers=["CPUExecutionProvider"])
    # The fast tokenizer sentence-transformers runs, without transformers (nor torch) around
    # it: truncated and padded (on the right) as sentence-transformers asks it to.
    tokenizer = Tokenizer.from_file(str(target / TOKENIZER_FILE))
    tokenizer.enable_truncation(manifest["max_length"], strategy="longest_first")
    tokenizer.enable_padding(pad_id=manifest["pad_id"], pad_token=manifest["pad_token"],
                             pad_type_id=manifest["pad_type_id"])
    return OnnxEncoder(session, tokenizer, tuple(manifest["inputs"]), manifest["lower_case"],
                       manifest["dimension"])


def _export(folder: str, target: Path, threads: int) -> None:
    """Runs ``export`` in a child process: torch, needed only to trace the model, then never
    enters (nor keeps its memory in) the process that serves, and an exporter that crashes
    takes only the child down."""
    logger.info("exporting the embedding model in %s to ONNX (once)", folder)
    started = time.monotonic()
    # The child imports this package from where this process did, installed or not.
    path = [str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH", "")]
    done = subprocess.run(
        [sys.executable, "-m", "app.embeddings_onnx", folder, str(target), str(threads)],
        env={**os.environ, "PYTHONPATH": os.pathsep.join(p for p in path if p)},
        capture_output=True, text=True, check=False)
    if done.returncode != 0 or not (target / MANIFEST).is_file():
        said = done.stderr.strip().splitlines() or [f"exit status {done.returncode}"]
        raise OnnxUnavailable(f"the export failed: {said[-1]}")
    manifest = json.loads((target / MANIFEST).read_text())
    logger.info("exported in %.1f s; lowest cosine with torch on the probes %.7f",
                time.monotonic() - started, manifest["min_cosine"])


def export(folder: str, target: Path, threads: int) -> None:
    """Traces the model into a temporary folder beside ``target``, compares its vectors with
    torch's and renames it into place (an export whose vectors differ is kept too, with its
    cosine, so it is not remade at every start)."""
    model = load_torch_model(folder, "cpu", threads)
    temporary = Path(tempfile.mkdtemp(prefix=".export-", dir=target.parent))
    try:
        manifest = _trace(model, temporary)
        exported = open_export(temporary, manifest, threads)
        manifest["min_cosine"] = _agreement(TorchEncoder(model), exported)
        (temporary / MANIFEST).write_text(json.dumps(manifest, indent=2))
        os.replace(temporary, target)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise


def _trace(model: Any, into: Path) -> dict[str, Any]:
    import torch

    if getattr(model, "default_prompt_name", None) or any((getattr(model, "prompts", None)
                                                            or {}).values()):
        raise OnnxUnavailable("the model prepends prompts, which the export does not")
    tokenizer: Any = getattr(model, "tokenizer", None)
    fast = getattr(tokenizer, "backend_tokenizer", None) or getattr(tokenizer, "_tokenizer", None)
    if fast is None or tokenizer.pad_token_id is None:
        raise OnnxUnavailable("the model has no fast text tokenizer with a padding token")
    if getattr(tokenizer, "padding_side", "right") != "right":
        raise OnnxUnavailable("the model's tokenizer pads on the left")
    preprocess = getattr(model, "preprocess", None) or model.tokenize
    features = preprocess(["a sentence to trace the model with", "x"])
    tensors = {name: value for name, value in features.items() if torch.is_tensor(value)}
    inputs = tuple(name for name in TOKEN_INPUTS if name in tensors)
    if set(tensors) != set(inputs):
        raise OnnxUnavailable(f"the model takes inputs the export does not: {sorted(tensors)}")

    class Pipeline(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, *values: Any) -> Any:
            return self.model(dict(zip(inputs, values, strict=True)))[OUTPUT]

    axes = {name: {0: "batch", 1: "tokens"} for name in inputs}
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # tracer warnings about shapes the probes check
            torch.onnx.export(Pipeline().eval(), tuple(tensors[name] for name in inputs),
                              str(into / ONNX_FILE), dynamo=False, opset_version=OPSET,
                              input_names=list(inputs), output_names=[OUTPUT],
                              dynamic_axes={**axes, OUTPUT: {0: "batch"}})
    except Exception as exc:  # the exporter's errors are many and untyped
        raise OnnxUnavailable(f"the model could not be exported: {exc}") from exc
    fast.save(str(into / TOKENIZER_FILE))
    return {"export_version": EXPORT_VERSION, "inputs": list(inputs),
            "max_length": int(model.max_seq_length), "pad_id": int(tokenizer.pad_token_id),
            "pad_token": str(tokenizer.pad_token),
            "pad_type_id": int(getattr(tokenizer, "pad_token_type_id", 0) or 0),
            "lower_case": bool(getattr(model[0], "do_lower_case", False)),
            "dimension": TorchEncoder(model).dimension}


def _agreement(reference: TorchEncoder, exported: OnnxEncoder) -> float:
    """The lowest cosine between the two backends' vectors of ``PROBES``, embedded one at a
    time and all in one padded batch."""
    texts = list(PROBES)
    ours = [exported.encode(texts, len(texts))]
    theirs = [reference.encode(texts, len(texts))]
    for text in texts:
        ours.append(exported.encode([text], 1))
        theirs.append(reference.encode([text], 1))
    return min(float(np.min(np.sum(a * b, axis=1))) for a, b in zip(ours, theirs, strict=True))


if __name__ == "__main__":  # the child ``_export`` starts: FOLDER TARGET THREADS
    try:
        export(sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]))
    except OnnxUnavailable as exc:  # one line, the reason, for the parent to report
        print(exc, file=sys.stderr)
        sys.exit(3)

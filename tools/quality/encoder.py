"""tools/quality/encoder.py: a BERT-style encoder in numpy (no torch): safetensors weights, the uncased WordPiece
tokenizer, and a forward pass that hands back the queries, keys and values of every layer and head.

    model = Encoder.load(model_dir)            # config.json, model.safetensors, vocab.txt
    ids = Tokenizer(model_dir / "vocab.txt").encode(text)
    hidden, qkv = model.forward(ids)          # qkv[layer] = (q, k, v), each [heads, N, head_dim] float32

Written from the published architecture (Devlin et al. 2019: post-LayerNorm blocks, exact-erf GELU, absolute
position embeddings) for the quality benchmark of tools/quality/quality.py; tests/python/test_quality_encoder.py
checks it against a loop-by-loop float64 forward on a tiny random model.
"""

from __future__ import annotations

import json
import pathlib
import struct
import unicodedata

import numpy as np

# safetensors dtype names -> numpy dtypes (bf16 is widened below).
_DTYPES = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "I64": np.int64, "I32": np.int32}


def read_safetensors(path) -> dict:
    """Every tensor of a .safetensors file as a numpy array (float types as float32). The format: an 8-byte
    little-endian header length, a JSON header {name: {dtype, shape, data_offsets}}, then the raw data."""
    data = pathlib.Path(path).read_bytes()
    if len(data) < 8:
        raise ValueError(f"{path}: too short for a safetensors file")
    (length,) = struct.unpack("<Q", data[:8])
    if 8 + length > len(data):
        raise ValueError(f"{path}: header length {length} runs past the end of the file")
    header = json.loads(data[8:8 + length])
    base = 8 + length
    tensors = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        start, end = entry["data_offsets"]
        raw = data[base + start:base + end]
        if entry["dtype"] == "BF16":
            # bfloat16 is the top half of a float32.
            array = (np.frombuffer(raw, "<u2").astype(np.uint32) << 16).view(np.float32)
        elif entry["dtype"] in _DTYPES:
            array = np.frombuffer(raw, np.dtype(_DTYPES[entry["dtype"]]).newbyteorder("<"))
        else:
            raise ValueError(f"{path}: tensor {name}: dtype {entry['dtype']} is not supported")
        array = array.reshape(entry["shape"])
        tensors[name] = array.astype(np.float32) if array.dtype.kind == "f" else array
    return tensors


def write_safetensors(path, tensors: dict) -> None:
    """The inverse of read_safetensors for float32 arrays (used by the tests to build tiny models)."""
    header, chunks, offset = {}, [], 0
    for name, array in tensors.items():
        raw = np.ascontiguousarray(array, "<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(np.shape(array)), "data_offsets": [offset, offset + len(raw)]}
        chunks.append(raw)
        offset += len(raw)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)  # the format aligns the data to 8 bytes
    pathlib.Path(path).write_bytes(struct.pack("<Q", len(text)) + text + b"".join(chunks))


def _is_punctuation(ch: str) -> bool:
    # BERT treats every non-alphanumeric ASCII symbol as punctuation, as well as Unicode's P* categories.
    cp = ord(ch)
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(ch).startswith("P")


def _is_cjk(cp: int) -> bool:
    return (0x4E00 <= cp <= 0x9FFF or 0x3400 <= cp <= 0x4DBF or 0x20000 <= cp <= 0x2A6DF or 0x2A700 <= cp <= 0x2B73F
            or 0x2B740 <= cp <= 0x2B81F or 0x2B820 <= cp <= 0x2CEAF or 0xF900 <= cp <= 0xFAFF
            or 0x2F800 <= cp <= 0x2FA1F)


class Tokenizer:
    """The uncased BERT tokenizer: clean, split CJK characters, lowercase and strip accents, split on whitespace
    and punctuation, then WordPiece (greedy longest match, continuation pieces prefixed '##')."""

    def __init__(self, vocab_path, max_chars_per_word: int = 100):
        words = pathlib.Path(vocab_path).read_text(encoding="utf-8").split("\n")
        if words and words[-1] == "":
            words.pop()
        self.vocab = {w: i for i, w in enumerate(words)}
        for special in ("[UNK]", "[CLS]", "[SEP]"):
            if special not in self.vocab:
                raise ValueError(f"{vocab_path}: the vocabulary has no {special} token")
        self.unk, self.cls, self.sep = self.vocab["[UNK]"], self.vocab["[CLS]"], self.vocab["[SEP]"]
        self.max_chars_per_word = max_chars_per_word

    def words(self, text: str) -> list:
        """The words and punctuation marks of `text`, normalized, before WordPiece."""
        cleaned = []
        for ch in text:
            cp = ord(ch)
            if cp == 0 or cp == 0xFFFD:
                continue
            if ch in "\t\n\r" or unicodedata.category(ch) == "Zs":
                cleaned.append(" ")
            elif unicodedata.category(ch) in ("Cc", "Cf"):
                continue
            elif _is_cjk(cp):
                cleaned.append(f" {ch} ")
            else:
                cleaned.append(ch)
        text = unicodedata.normalize("NFD", "".join(cleaned).lower())
        text = "".join(ch for ch in text if unicodedata.category(ch) != "Mn")
        out = []
        for word in text.split():
            current = ""
            for ch in word:
                if _is_punctuation(ch):
                    if current:
                        out.append(current)
                    out.append(ch)
                    current = ""
                else:
                    current += ch
            if current:
                out.append(current)
        return out

    def wordpiece(self, word: str) -> list:
        """The ids of one word's pieces; [UNK] alone when some part of it matches no piece."""
        if len(word) > self.max_chars_per_word:
            return [self.unk]
        ids, start = [], 0
        while start < len(word):
            end = len(word)
            while end > start:
                piece = word[start:end] if start == 0 else "##" + word[start:end]
                if piece in self.vocab:
                    ids.append(self.vocab[piece])
                    break
                end -= 1
            if end == start:
                return [self.unk]
            start = end
        return ids

    def encode(self, text: str) -> list:
        """The ids of `text` without [CLS]/[SEP]."""
        return [i for word in self.words(text) for i in self.wordpiece(word)]


def _erf(x: np.ndarray) -> np.ndarray:
    """erf in float64 to about 1e-7 absolute (Abramowitz and Stegun 7.1.26): numpy has no erf and the model's
    GELU is the exact erf form; 1e-7 is below float32 resolution of the activations."""
    sign = np.sign(x)
    a = np.abs(x)
    t = 1.0 / (1.0 + 0.3275911 * a)
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))))
    return sign * (1.0 - poly * np.exp(-a * a))


def gelu(x: np.ndarray) -> np.ndarray:
    return (0.5 * x * (1.0 + _erf(x.astype(np.float64) / np.sqrt(2.0)))).astype(x.dtype)


def layer_norm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, eps: float) -> np.ndarray:
    mean = x.mean(axis=-1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * weight + bias


class Encoder:
    """A BERT encoder's weights and its forward pass (inference: no dropout)."""

    def __init__(self, config: dict, tensors: dict):
        self.layers = int(config["num_hidden_layers"])
        self.heads = int(config["num_attention_heads"])
        self.hidden = int(config["hidden_size"])
        if self.hidden % self.heads:
            raise ValueError(f"hidden_size {self.hidden} is not a multiple of num_attention_heads {self.heads}")
        self.head_dim = self.hidden // self.heads
        self.eps = float(config.get("layer_norm_eps", 1e-12))
        self.max_positions = int(config["max_position_embeddings"])
        if config.get("hidden_act", "gelu") != "gelu":
            raise ValueError(f"hidden_act {config.get('hidden_act')!r}: only 'gelu' (the erf form) is implemented")
        # Checkpoints name the tensors with or without a model prefix ("bert.", "roberta.").
        anchor = "embeddings.word_embeddings.weight"
        prefixes = [name[:-len(anchor)] for name in tensors if name.endswith(anchor)]
        if not prefixes:
            raise ValueError(f"no tensor named *{anchor}: not a BERT-style checkpoint")
        self.prefix = prefixes[0]
        self.w = tensors

    @classmethod
    def load(cls, model_dir) -> "Encoder":
        model_dir = pathlib.Path(model_dir)
        config = json.loads((model_dir / "config.json").read_text())
        return cls(config, read_safetensors(model_dir / "model.safetensors"))

    def _t(self, name: str) -> np.ndarray:
        return self.w[self.prefix + name]

    def _linear(self, x: np.ndarray, name: str) -> np.ndarray:
        # torch's Linear layout: weight [out, in].
        return x @ self._t(name + ".weight").T + self._t(name + ".bias")

    def _split(self, x: np.ndarray) -> np.ndarray:
        """[N, hidden] -> [heads, N, head_dim]."""
        return np.ascontiguousarray(x.reshape(x.shape[0], self.heads, self.head_dim).transpose(1, 0, 2))

    def forward(self, ids) -> tuple:
        """(last hidden state [N, hidden], [(q, k, v) per layer, each [heads, N, head_dim]]) for one sequence of
        token ids (token type 0, no padding), every array float32."""
        ids = np.asarray(ids, np.int64)
        n = len(ids)
        if n > self.max_positions:
            raise ValueError(f"sequence of {n} tokens is longer than the model's {self.max_positions} positions")
        x = (self._t("embeddings.word_embeddings.weight")[ids] + self._t("embeddings.position_embeddings.weight")[:n]
             + self._t("embeddings.token_type_embeddings.weight")[0])
        x = layer_norm(x, self._t("embeddings.LayerNorm.weight"), self._t("embeddings.LayerNorm.bias"), self.eps)
        qkv = []
        for layer in range(self.layers):
            p = f"encoder.layer.{layer}."
            q, k, v = (self._split(self._linear(x, p + "attention.self." + part)) for part in ("query", "key", "value"))
            qkv.append((q, k, v))
            logits = q @ k.transpose(0, 2, 1) / np.float32(np.sqrt(self.head_dim))
            logits -= logits.max(axis=-1, keepdims=True)
            weights = np.exp(logits)
            weights /= weights.sum(axis=-1, keepdims=True)
            context = (weights @ v).transpose(1, 0, 2).reshape(n, self.hidden)
            x = layer_norm(x + self._linear(context, p + "attention.output.dense"),
                           self._t(p + "attention.output.LayerNorm.weight"),
                           self._t(p + "attention.output.LayerNorm.bias"), self.eps)
            inner = gelu(self._linear(x, p + "intermediate.dense"))
            x = layer_norm(x + self._linear(inner, p + "output.dense"), self._t(p + "output.LayerNorm.weight"),
                           self._t(p + "output.LayerNorm.bias"), self.eps)
        return x.astype(np.float32), qkv

"""all-MiniLM-L6-v2 in mhalib parts against transformers' BertModel on the same weights.

transformers is the reference here and only here: mhalib and the chapters never import it.
The reference runs the eager attention path, which returns the attention weights.
"""

from __future__ import annotations

import copy
import shutil
import subprocess
import sys

import pytest
import torch

import mhalib
from mhalib.pretrained import minilm

SENTENCES = [
    "The cat sat on the mat.",
    "A much longer sentence, with two commas, needs more tokens than the first.",
    "Heads attend.",
    "Bank robbers ran from the river bank to the bank.",
]
TOL = dict(rtol=1e-5, atol=1e-5)


@pytest.fixture(scope="module")
def ours():
    return minilm.load_minilm()


@pytest.fixture(scope="module")
def reference():
    from transformers import BertModel

    model = BertModel.from_pretrained(minilm.model_folder(), attn_implementation="eager")
    return model.eval()


@pytest.fixture(scope="module")
def batch(ours):
    input_ids, attention_mask = ours.tokenize(SENTENCES)
    assert (attention_mask == 0).any(), "the batch must contain padding"
    return input_ids, attention_mask


@pytest.fixture(scope="module")
def theirs(reference, batch):
    input_ids, attention_mask = batch
    with torch.no_grad():
        out = reference(input_ids=input_ids, attention_mask=attention_mask, output_attentions=True)
    return out.last_hidden_state, out.attentions


@pytest.fixture(scope="module")
def mine(ours, batch):
    with torch.no_grad():
        return ours(*batch, need_weights=True)


def test_the_interface_the_issue_specifies(ours, batch, mine) -> None:
    from tokenizers import Tokenizer

    assert isinstance(ours, torch.nn.Module) and not ours.training
    assert {p.dtype for p in ours.parameters()} == {torch.float32}
    assert isinstance(ours.tokenizer, Tokenizer)
    assert len(ours.layers) == 6
    assert all(isinstance(block.attention, mhalib.MultiHeadAttention) for block in ours.layers)
    assert all(isinstance(block, mhalib.TransformerBlock) for block in ours.layers)
    hidden, weights = mine
    B, L = batch[0].shape
    assert hidden.shape == (B, L, 384)
    assert len(weights) == 6 and all(w.shape == (B, 12, L, L) for w in weights)
    with torch.no_grad():
        assert ours(*batch)[1] is None


def test_tokenizer_pads_to_the_longest_sentence(ours, batch) -> None:
    input_ids, attention_mask = batch
    lengths = attention_mask.sum(1)
    assert input_ids.shape[1] == int(lengths.max()) < 128  # not tokenizer.json's fixed 128
    assert input_ids.dtype == torch.int64
    for ids, n in zip(input_ids, lengths.tolist()):
        assert ids[0] == 101 and ids[n - 1] == 102  # [CLS] ... [SEP]
        assert (ids[n:] == 0).all()  # [PAD]


def test_hidden_states_equal_transformers(mine, theirs, batch) -> None:
    hidden, ref_hidden = mine[0], theirs[0]
    real = batch[1].bool()
    # real tokens to 1e-5 absolute; padded positions (read by no real token) to 1e-5 relative
    assert (hidden - ref_hidden)[real].abs().max() < 1e-5
    torch.testing.assert_close(hidden, ref_hidden, **TOL)


def test_every_heads_weights_equal_transformers(mine, theirs, batch) -> None:
    for layer, (w, ref_w) in enumerate(zip(mine[1], theirs[1])):
        assert (w - ref_w).abs().max() < 1e-5, f"layer {layer}"
    padded_keys = ~batch[1].bool()[:, None, None, :]  # (B, 1, 1, S)
    for w in mine[1]:
        assert (w.masked_select(padded_keys) == 0).all()
        torch.testing.assert_close(w.sum(-1), torch.ones(w.shape[:-1]))


def test_fused_path_equals_the_path_with_weights(ours, batch, mine) -> None:
    with torch.no_grad():
        fused, _ = ours(*batch)
    real = batch[1].bool()
    torch.testing.assert_close(fused[real], mine[0][real], **TOL)


def test_sentence_embeddings_equal_mean_pooled_transformers(ours, theirs, batch) -> None:
    ref_hidden = theirs[0]
    mask = batch[1][:, :, None].float()  # (B, L, 1)
    # sentence-transformers' Pooling (mean over real tokens), then Normalize
    pooled = (ref_hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
    expected = torch.nn.functional.normalize(pooled, p=2, dim=1)
    with torch.no_grad():
        got = ours.encode(SENTENCES)
        alone = torch.cat([ours.encode([s]) for s in SENTENCES])  # no padding at all
    assert got.shape == (len(SENTENCES), 384)
    torch.testing.assert_close(got.norm(dim=1), torch.ones(len(SENTENCES)))
    assert (got - expected).abs().max() < 1e-5
    assert (alone - expected).abs().max() < 1e-5


def test_similar_sentences_are_close() -> None:
    # not a numerical check against the reference: a sanity check that the model works
    model = minilm.load_minilm()
    e = model.encode(["A man is playing a guitar.", "Someone plays the guitar.", "The stock market fell today."])
    assert e[0] @ e[1] > 0.5 > e[0] @ e[2]


def test_head_mask_switches_exactly_those_heads_off(ours, batch) -> None:
    head_mask = torch.ones(6, 12)
    head_mask[0, 2] = head_mask[3, 5] = head_mask[3, 11] = 0
    with torch.no_grad():
        hidden, weights = ours(*batch, need_weights=True, head_mask=head_mask)
        fused, _ = ours(*batch, head_mask=head_mask)
        same, _ = ours(*batch, head_mask=torch.ones(6, 12, dtype=torch.bool))
        plain, _ = ours(*batch)
    assert (weights[0][:, 2] == 0).all() and (weights[3][:, [5, 11]] == 0).all()
    assert (weights[0][:, [0, 1, 3]].sum(-1) > 0.99).all()
    torch.testing.assert_close(same, plain)
    # A head that is off adds nothing: the same as zeroing its Dh columns of out_proj.weight.
    knocked = copy.deepcopy(ours)
    with torch.no_grad():
        for layer, head in ((0, 2), (3, 5), (3, 11)):
            knocked.layers[layer].attention.out_proj.weight[:, head * 32 : (head + 1) * 32] = 0
        expected, _ = knocked(*batch)
    real = batch[1].bool()
    torch.testing.assert_close(hidden[real], expected[real], **TOL)
    torch.testing.assert_close(fused[real], expected[real], **TOL)
    assert (hidden - plain)[real].abs().max() > 1e-2  # the heads did something


@pytest.mark.parametrize(
    ("head_mask", "message"),
    [(torch.ones(6, 11), "head_mask must have shape"), (torch.full((6, 12), 0.5), "only 0")],
)
def test_a_bad_head_mask_is_refused(ours, batch, head_mask, message) -> None:
    with pytest.raises(ValueError, match=message):
        ours(*batch, head_mask=head_mask)


def test_a_bad_attention_mask_is_refused(ours, batch) -> None:
    with pytest.raises(ValueError, match="attention_mask must have the shape of input_ids"):
        ours(batch[0], batch[1][:, 1:])
    with pytest.raises(TypeError, match="input_ids must be an integer tensor"):
        ours(batch[0].float(), batch[1])


def test_the_sha256_check_refuses_a_changed_file(tmp_path) -> None:
    folder = minilm.model_folder()
    shutil.copy(folder / "tokenizer.json", tmp_path)
    data = bytearray((folder / "model.safetensors").read_bytes())
    data[-1] ^= 1  # one bit of the last weight
    (tmp_path / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(ValueError, match=f"model.safetensors has sha256 .*, expected {minilm.SHA256}"):
        minilm.load_minilm(tmp_path)


def test_the_installed_file_has_the_expected_sha256() -> None:
    from mhalib.pretrained._files import sha256_of

    assert sha256_of(minilm.model_folder() / "model.safetensors") == minilm.SHA256


def test_the_name_map_places_every_tensor_once() -> None:
    checkpoint = minilm.load_state_dict(minilm.model_folder() / "model.safetensors")
    names = minilm.checkpoint_names()
    assert len(set(names.values())) == len(names)  # one checkpoint tensor per parameter
    assert set(names.values()) | set(minilm.IGNORED) == set(checkpoint)
    assert set(names) == set(minilm.MiniLM().state_dict())


def test_load_weights_names_what_is_wrong() -> None:
    checkpoint = minilm.load_state_dict(minilm.model_folder() / "model.safetensors")
    model = minilm.MiniLM()
    missing = {k: v for k, v in checkpoint.items() if k != "encoder.layer.3.attention.self.key.bias"}
    with pytest.raises(ValueError, match="encoder.layer.3.attention.self.key.bias"):
        minilm.load_weights(model, missing)
    extra = dict(checkpoint, **{"encoder.layer.6.output.dense.weight": torch.zeros(1)})
    with pytest.raises(ValueError, match="encoder.layer.6.output.dense.weight"):
        minilm.load_weights(model, extra)
    transposed = dict(checkpoint)
    transposed["encoder.layer.0.intermediate.dense.weight"] = checkpoint["encoder.layer.0.intermediate.dense.weight"].T
    with pytest.raises(ValueError, match=r"intermediate.dense.weight has shape \(384, 1536\)"):
        minilm.load_weights(model, transposed)


def test_mhalib_never_imports_transformers() -> None:
    code = (
        "import sys, mhalib\n"
        "assert not {'safetensors', 'tokenizers', 'transformers'} & set(sys.modules)\n"
        "model = mhalib.pretrained.load_minilm()\n"
        "model.encode(['one sentence'])\n"
        "assert 'transformers' not in sys.modules, 'mhalib imported transformers'\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr

"""Signed notes and checkpoints: known answers from golang.org/x/mod/sumdb (note, tlog), the
C2SP specifications (signed-note, tlog-cosignature) and transparency-dev/formats."""

from __future__ import annotations

import base64
import hashlib

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ledger.merkle import EMPTY_ROOT, DictNodeStore, MerkleTree, leaf_hash
from ledger.tlog.checkpoint import Checkpoint, CheckpointError, consistent, open_checkpoint
from ledger.tlog.note import (
    ALG_COSIGNATURE_V1,
    CosignatureSigner,
    CosignatureVerifier,
    Ed25519Signer,
    Ed25519Verifier,
    InvalidNoteSignature,
    MalformedNote,
    NoteError,
    Signature,
    UnverifiedNote,
    cosignature_timestamp,
    generate_signer_key,
    open_note,
    parse_note,
    sign_note,
    signer_from_key,
    verifier_from_key,
)

# golang.org/x/mod/sumdb/note/note_test.go
PETER_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
PETER_SKEY = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
ENOCH_VKEY = "EnochRoot+af0cfe78+ATtqJ7zOtqQtYqOo0CpvDXNlMhV3HeJDpjrASKGLWdop"
TEXT = (
    "If you think cryptography is the answer to your problem,\n"
    "then you don't know what your problem is.\n"
)
PETER_B64 = (
    "x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM="
)
ENOCH_B64 = (
    "rwz+eBzmZa0SO3NbfRGzPCpDckykFXSdeX+MNtCOXm2/5n2tiOHp+vAF1aGrQ5ovTG01oOTGwnWLox33WWd1RvMc+QQ="
)
PETER_SIG = f"— PeterNeumann {PETER_B64}\n"
ENOCH_SIG = f"— EnochRoot {ENOCH_B64}\n"
PETER = Signature("PeterNeumann", 0xC74F20A3, PETER_B64)
ENOCH = Signature("EnochRoot", 0xAF0CFE78, ENOCH_B64)


def test_go_verifier_key_parses_and_every_mangling_is_refused() -> None:
    v = verifier_from_key(PETER_VKEY)
    assert (v.name, v.key_id, v.vkey) == ("PeterNeumann", 0xC74F20A3, PETER_VKEY)
    b = PETER_VKEY
    for i in range(len(b) + 1):
        for j in range(i + 1, len(b) + 1):
            if (i, j) != (0, len(b)):
                with pytest.raises(NoteError):
                    verifier_from_key(b[i:j])
    for i in range(len(b)):
        mangled = b[:i] + chr(ord(b[i]) + 1) + b[i + 1 :]
        with pytest.raises(NoteError):
            verifier_from_key(mangled)
    # wrong-length key and unknown algorithm, each with its key hash adjusted
    for bad in (
        "PeterNeumann+cc469956+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TWBADKEY==",
        "PeterNeumann+173116ae+ZRpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
    ):
        with pytest.raises(NoteError):
            verifier_from_key(bad)


def test_go_signer_key_and_sign_known_answer() -> None:
    signer = signer_from_key(PETER_SKEY)
    assert signer.vkey == PETER_VKEY and signer.skey == PETER_SKEY
    assert sign_note(TEXT, [signer]) == TEXT + "\n" + PETER_SIG
    # an existing signature by the same key is replaced, not repeated
    stale = Signature("PeterNeumann", 0xC74F20A3, "BADSIGN=")
    assert sign_note(TEXT, [signer], keep=[stale]) == TEXT + "\n" + PETER_SIG
    # other signatures are kept before the new ones
    assert sign_note(TEXT, [signer], keep=[ENOCH]) == TEXT + "\n" + ENOCH_SIG + PETER_SIG
    for bad in ("abc", "a\x00b\n", "a\ud800\n", "a\rb\n"):
        with pytest.raises(MalformedNote):
            sign_note(bad, [signer])
    for i in range(1, len(PETER_SKEY)):
        with pytest.raises(NoteError):
            signer_from_key(PETER_SKEY[:i])


def test_go_open_known_answers() -> None:
    peter, enoch = verifier_from_key(PETER_VKEY), verifier_from_key(ENOCH_VKEY)
    note = open_note(TEXT + "\n" + PETER_SIG + ENOCH_SIG, [peter])
    assert note.text == TEXT and note.signatures == (PETER,) and note.unverified == (ENOCH,)
    note = open_note((TEXT + "\n" + PETER_SIG + ENOCH_SIG).encode(), [peter, enoch])
    assert note.signatures == (PETER, ENOCH) and note.unverified == ()
    with pytest.raises(UnverifiedNote) as unverified:
        open_note(TEXT + "\n" + PETER_SIG + ENOCH_SIG, [])
    assert str(unverified.value) == "note has no verifiable signatures"
    assert unverified.value.note.unverified == (PETER, ENOCH)
    with pytest.raises(NoteError, match="ambiguous key EnochRoot\\+af0cfe78"):
        open_note(TEXT + "\n" + ENOCH_SIG, [enoch, peter, enoch])
    open_note(TEXT + "\n" + PETER_SIG, [enoch, peter, enoch])
    with pytest.raises(MalformedNote):
        open_note(TEXT + "\n" + PETER_SIG * 101, [peter])
    with pytest.raises(InvalidNoteSignature, match="PeterNeumann\\+c74f20a3"):
        open_note(TEXT + "\n" + PETER_SIG[:60] + "ABCD" + PETER_SIG[60:], [peter])
    # duplicated verified and unverified signatures
    enoch_abcd = ENOCH_SIG[:60] + "ABCD" + ENOCH_SIG[60:]
    note = open_note(
        TEXT + "\n" + PETER_SIG + PETER_SIG + ENOCH_SIG + ENOCH_SIG + enoch_abcd, [peter]
    )
    assert note.signatures == (PETER,)
    assert [s.base64 for s in note.unverified] == [ENOCH_B64, enoch_abcd.split(" ")[2][:-1]]


@pytest.mark.parametrize(
    "message",
    [
        TEXT,
        TEXT + "\n",
        TEXT + "\n" + PETER_SIG[:-1],
        "\x01" + TEXT + "\n" + PETER_SIG,
        b"\xff" + (TEXT + "\n" + PETER_SIG).encode(),
        "\x00" + TEXT + "\n" + PETER_SIG,
        "\ud800" + TEXT + "\n" + PETER_SIG,
        TEXT + "\n— Bad Name " + PETER_B64,
        TEXT + "\n" + PETER_SIG + "Unexpected line.\n",
        TEXT + "\n— PeterNeumann \n",
        TEXT + "\n— Peter+Neumann " + PETER_B64 + "\n",
    ],
)
def test_malformed_notes_are_refused(message: str | bytes) -> None:
    with pytest.raises(MalformedNote):
        open_note(message, [verifier_from_key(PETER_VKEY)])


def test_c2sp_signed_note_example() -> None:
    vkey = "example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k"
    message = (
        "This is an example message.\n\n— example.com/foo Uw2QOkn8srV1yJGh2VYRlL1Tnagv1YEq6TfX"
        "ppzi2ONncAlTgK7Ztg1ERYNZXsYjOBH3mFXmRKuwHjG1Yu72IneyaQM=\n"
    )
    note = open_note(message, [verifier_from_key(vkey)])
    assert note.text == "This is an example message.\n"
    with pytest.raises(InvalidNoteSignature):
        open_note(message.replace("example message", "example messagf"), [verifier_from_key(vkey)])


def test_unknown_signatures_sharing_a_name_or_an_id_are_ignored() -> None:
    signer = Ed25519Signer("example.com/log", Ed25519PrivateKey.generate())
    other = Ed25519Signer("example.com/log", Ed25519PrivateKey.generate())  # same name
    message = sign_note("hello\n", [other, signer])
    note = open_note(message, [signer.verifier])
    assert [s.key_id for s in note.signatures] == [signer.key_id]
    assert [s.key_id for s in note.unverified] == [other.key_id]
    # 16 signatures from unknown keys and one known: accepted
    many = [generate_signer_key(f"w{i}.example") for i in range(16)]
    note = open_note(sign_note("hello\n", [*many, signer]), [signer.verifier])
    assert len(note.unverified) == 16


# transparency-dev/formats note/note_cosigv1_test.go
def test_cosignature_verifier_keys_known_answers() -> None:
    native = verifier_from_key(
        "remora.n621.de+da77ade7+BOvN63jn/bLvkieywe8R6UYAtVtNbZpXh34x7onlmtw2"
    )
    assert isinstance(native, CosignatureVerifier) and native.key_id == 0xDA77ADE7
    plain = verifier_from_key("TEST+7997405c+AQcC+FTVKf0jlTdHDY3rbevmnKxxPjigCXlVtGe6RIr6")
    assert type(plain) is Ed25519Verifier
    for bad in (
        "bananas.sigstore.dev+12344556",
        "rekor.sigstore.dev+12345678+THIS_IS_NOT_BASE64!",
        "rekor.sigstore.dev+12345678+AwEB",
        "remora.n621.de+00000000+BOvN63jn/bLvkieywe8R6UYAtVtNbZpXh34x7onlmtw2",
    ):
        with pytest.raises(NoteError):
            verifier_from_key(bad)


def test_cosignature_timestamp_known_answers() -> None:
    good = Signature(
        "w",
        0,
        "ZGhGuQAAAABm/qTPeyKXD+R2rzyQsxPiP8mXum7qq/iF0u4vanlqJyocWODBt97w9uL+8qT7S5gxEHWWOworDcFiEBYJXORmnFBOBA==",
    )
    assert cosignature_timestamp(good) == 1727964367
    for bad in (
        "eQjRQm6eSKzFoiYalgwCPXu2y3ijtg68is9M46JKxuZB+dRfTmeQeDBoXnvxZx2ugnkyV+MUMLXpWs1hPb/W/4xkNQY=",
        "5%/$!\n 2",
    ):
        with pytest.raises(NoteError):
            cosignature_timestamp(Signature("w", 0, bad))


def test_cosignature_v1_signs_the_header_the_time_and_the_whole_body() -> None:
    seed = bytes(range(32))
    key = Ed25519PrivateKey.from_private_bytes(seed)
    cosigner = CosignatureSigner("witness.example/w1", key, clock=lambda: 1679315147)
    text = "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
    message = sign_note(text, [cosigner])
    (sig,) = parse_note(message)[1]
    raw = base64.b64decode(sig.base64)
    assert (
        raw[:4]
        == hashlib.sha256(b"witness.example/w1\n\x04" + cosigner.verifier.public_key).digest()[:4]
    )
    assert int.from_bytes(raw[4:12], "big") == 1679315147 == cosignature_timestamp(sig)
    signed = b"cosignature/v1\ntime 1679315147\n" + text.encode()
    key.public_key().verify(raw[12:], signed)  # raises unless exactly that message was signed
    assert open_note(message, [verifier_from_key(cosigner.vkey)]).signatures == (sig,)
    # the same key as a plain Ed25519 vkey has another key id: the cosignature is unknown to it
    plain = Ed25519Verifier("witness.example/w1", cosigner.verifier.public_key)
    with pytest.raises(UnverifiedNote):
        open_note(message, [plain])
    # extension lines are covered
    extended = sign_note(text + "Extendo\n", [cosigner])
    with pytest.raises(InvalidNoteSignature):
        open_note(extended.replace("Extendo", "Extendo@"), [cosigner.verifier])
    assert signer_from_key(cosigner.skey).vkey == cosigner.vkey
    assert generate_signer_key("w", ALG_COSIGNATURE_V1).vkey.split("+")[2].startswith("B")


# golang.org/x/mod/sumdb/tlog/note_test.go, and c2sp.org/tlog-checkpoint
GO_TREE = "go.sum database tree\n123456789012\nTszzRgjTG6xce+z2AG31kAXYKBgQVtCSCE40HmuwBb0=\n"


def test_checkpoint_known_answer_and_round_trip() -> None:
    cp = Checkpoint.parse(GO_TREE)
    assert (cp.origin, cp.size, cp.root) == (
        "go.sum database tree",
        123456789012,
        leaf_hash(b"hello world"),
    )
    assert cp.text == GO_TREE
    extended = Checkpoint.parse(GO_TREE + "JOE\n")
    assert extended.extensions == ("JOE",) and extended.text == GO_TREE + "JOE\n"


@pytest.mark.parametrize(
    "text",
    [
        GO_TREE.replace("123456789012", "0xabcdef"),
        GO_TREE.replace("muwBb0=", "muwBTOOBIG="),
        GO_TREE.replace("123456789012", "0123456789012"),
        GO_TREE.replace("123456789012", "-1"),
        GO_TREE.replace("123456789012", "+1"),
        GO_TREE.replace("123456789012", " 1"),
        GO_TREE.replace("123456789012", "9223372036854775808"),
        GO_TREE.replace("123456789012", "١٢"),  # Arabic-Indic digits
        GO_TREE.replace("Bb0=", "Bb1="),  # non-canonical base64
        GO_TREE.replace("Tszz", "Tsz"),
        GO_TREE[:-1],
        GO_TREE + "JOE",
        GO_TREE + "\n",
        GO_TREE + "\nJOE\n",
        "\n123\n" + GO_TREE.split("\n")[2] + "\n",
        "origin\n1\n",
    ],
)
def test_malformed_checkpoints_are_refused(text: str) -> None:
    with pytest.raises(CheckpointError):
        Checkpoint.parse(text)


def test_signed_checkpoint_and_consistency() -> None:
    signer = Ed25519Signer("ledger.example.org/test", Ed25519PrivateKey.generate())
    tree = MerkleTree(DictNodeStore())
    leaves = [leaf_hash(str(i).encode()) for i in range(37)]
    tree.extend(leaves, 0)
    old = Checkpoint(signer.name, 13, tree.root(13))
    new = Checkpoint(signer.name, 37, tree.root(37))
    message = sign_note(new.text, [signer])
    opened, note = open_checkpoint(message, [signer.verifier])
    assert opened == new and note.signatures[0].name == signer.name
    proof = tree.consistency_proof(13, 37)
    assert consistent(old, new, proof)
    assert not consistent(old, new, proof[:-1])
    assert not consistent(Checkpoint("elsewhere", 13, old.root), new, proof)
    forged = Checkpoint(signer.name, 37, hashlib.sha256(b"x").digest())
    assert not consistent(old, forged, proof)
    assert consistent(Checkpoint(signer.name, 0, EMPTY_ROOT), new, [])
    assert consistent(new, new, []) and not consistent(new, old, proof)

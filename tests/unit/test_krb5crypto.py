"""Known-answer tests for pynfsd.gss.krb5crypto: RFC 3961 appendix A.1 (n-fold), RFC 3962
appendix B (string-to-key, which pins the AES DK derivation, and AES-CTS), RFC 8009
appendix A (string-to-key, key derivation, encryption, checksums)."""

from __future__ import annotations

import hmac
import os

import pytest

from pynfsd.gss import krb5crypto as kc
from tests.threads import run_in_threads


def h(text: str) -> bytes:
    return bytes.fromhex(text.replace("\n", " "))


# RFC 3961 A.1: (n bits, input, output)
NFOLD = [
    (64, b"012345", "be072631276b1955"),
    (56, b"password", "78a07b6caf85fa"),
    (64, b"Rough Consensus, and Running Code", "bb6ed30870b7f0e0"),
    (168, b"password", "59e4a8ca7c0385c3c37b3f6d2000247cb6e6bd5b3e"),
    (
        192,
        b"MASSACHVSETTS INSTITVTE OF TECHNOLOGY",
        "db3b0d8f0b061e603282b308a50841229ad798fab9540c1b",
    ),
    (168, b"Q", "518a54a215a8452a518a54a215a8452a518a54a215"),
    (168, b"ba", "fb25d531ae8974499f52fd92ea9857c4ba24cf297e"),
    (64, b"kerberos", "6b65726265726f73"),
    (128, b"kerberos", "6b65726265726f737b9b5b2b93132b93"),
    (168, b"kerberos", "8372c236344e5f1550cd0747e15d62ca7a5a3bcea4"),
    (256, b"kerberos", "6b65726265726f737b9b5b2b93132b935c9bdcdad95c9899c4cae4dee6d6cae4"),
]


@pytest.mark.parametrize(("bits", "data", "expected"), NFOLD)
def test_nfold(bits: int, data: bytes, expected: str) -> None:
    assert kc.nfold(data, bits // 8) == h(expected)


# RFC 3962 B: (iterations, password, salt, aes128 key, aes256 key)
S2K_3962 = [
    (
        1,
        b"password",
        b"ATHENA.MIT.EDUraeburn",
        "42263c6e89f4fc28b8df68ee09799f15",
        "fe697b52bc0d3ce14432ba036a92e65bbb52280990a2fa27883998d72af30161",
    ),
    (
        2,
        b"password",
        b"ATHENA.MIT.EDUraeburn",
        "c651bf29e2300ac27fa469d693bdda13",
        "a2e16d16b36069c135d5e9d2e25f896102685618b95914b467c67622225824ff",
    ),
    (
        1200,
        b"password",
        b"ATHENA.MIT.EDUraeburn",
        "4c01cd46d632d01e6dbe230a01ed642a",
        "55a6ac740ad17b4846941051e1e8b0a7548d93b0ab30a8bc3ff16280382b8c2a",
    ),
    (
        5,
        b"password",
        h("1234567878563412"),
        "e9b23d52273747dd5c35cb55be619d8e",
        "97a4e786be20d81a382d5ebc96d5909cabcdadc87ca48f574504159f16c36e31",
    ),
]


@pytest.mark.parametrize(("count", "password", "salt", "key128", "key256"), S2K_3962)
def test_rfc3962_string_to_key(
    count: int, password: bytes, salt: bytes, key128: str, key256: str
) -> None:
    assert kc.string_to_key(17, password, salt, count) == h(key128)
    assert kc.string_to_key(18, password, salt, count) == h(key256)


CHICKEN = b"chicken teriyaki"
CTS_PLAIN = b"I would like the General Gau's Chicken, please, and wonton soup."
# RFC 3962 B: AES-CTS with the all-zero IV, key "chicken teriyaki": (input length, output)
CTS = [
    (17, "c6353568f2bf8cb4d8a580362da7ff7f97"),
    (31, "fc00783e0efdb2c1d445d4c8eff7ed2297687268d6ecccc0c07b25e25ecfe5"),
    (32, "39312523a78662d5be7fcbcc98ebf5a897687268d6ecccc0c07b25e25ecfe584"),
    (
        47,
        "97687268d6ecccc0c07b25e25ecfe584b3fffd940c16a18c1b5549d2f838029e"
        "39312523a78662d5be7fcbcc98ebf5",
    ),
    (
        48,
        "97687268d6ecccc0c07b25e25ecfe5849dad8bbb96c4cdc03bc103e1a194bbd8"
        "39312523a78662d5be7fcbcc98ebf5a8",
    ),
    (
        64,
        "97687268d6ecccc0c07b25e25ecfe58439312523a78662d5be7fcbcc98ebf5a8"
        "4807efe836ee89a526730dbc2f7bc8409dad8bbb96c4cdc03bc103e1a194bbd8",
    ),
]


@pytest.mark.parametrize(("length", "expected"), CTS)
def test_rfc3962_cts(length: int, expected: str) -> None:
    plain = CTS_PLAIN[:length]
    assert kc.cts_encrypt(CHICKEN, plain) == h(expected)
    assert kc.cts_decrypt(CHICKEN, h(expected)) == plain


@pytest.mark.parametrize("length", [16, 17, 31, 32, 33, 47, 48, 64, 100, 4096, 65537])
def test_cts_reference_round_trip(length: int) -> None:
    key = os.urandom(32)
    data = os.urandom(length)
    assert kc.cts_decrypt(key, kc.cts_encrypt(key, data)) == data


def test_rfc8009_string_to_key() -> None:
    salt = h("10DF9DD783E5BC8ACEA1730E74355F61") + b"ATHENA.MIT.EDUraeburn"
    assert kc.string_to_key(19, b"password", salt) == h("089BCA48B105EA6EA77CA5D2F39DC5E7")
    assert kc.string_to_key(20, b"password", salt) == h(
        "45BD806DBF6A833A9CFFC1C94589A222367A79BC21C413718906E9F578A78467"
    )


B128 = h("3705D96080C17728A0E800EAB6E0D23C")
B256 = h("6D404D37FAF79F9DF0D33568D320669800EB4836472EA8A026D16B7182460C52")
# RFC 8009 A: key usage 2: (enctype, base key, kind, derived key)
KDF_8009 = [
    (19, B128, kc.KC, "B31A018A48F54776F403E9A396325DC3"),
    (19, B128, kc.KE, "9B197DD1E8C5609D6E67C3E37C62C72E"),
    (19, B128, kc.KI, "9FDA0E56AB2D85E1569A688696C26A6C"),
    (20, B256, kc.KC, "EF5718BE86CC84963D8BBB5031E9F5C4BA41F28FAF69E73D"),
    (20, B256, kc.KE, "56AB22BEE63D82D7BC5227F6773F8EA7A5EB1C825160C38312980C442E5C7E49"),
    (20, B256, kc.KI, "69B16514E3CD8E56B82010D5C73012B622C4D00FFC23ED1F"),
]


@pytest.mark.parametrize(("enctype", "base", "kind", "expected"), KDF_8009)
def test_rfc8009_key_derivation(enctype: int, base: bytes, kind: int, expected: str) -> None:
    assert kc.derive_key(enctype, base, 2, kind) == h(expected)


MSG21 = bytes(range(21))


def test_rfc8009_checksums() -> None:
    assert kc.UsageKey(19, B128, 2).checksum(MSG21, b"") == h("D78367186643D67B411CBA9139FC1DEE")
    assert kc.UsageKey(20, B256, 2).checksum(MSG21[:7], MSG21[7:]) == h(
        "45EE791567EEFCA37F4AC1E0222DE80D43C3BFA06699672A"
    )


def test_checksum_over_parts_equals_whole() -> None:
    key = kc.UsageKey(18, os.urandom(32), 25)
    whole = key.checksum(MSG21, b"")
    assert key.checksum(MSG21[:5], memoryview(MSG21)[5:]) == whole
    assert key.checksum(b"", bytearray(MSG21)) == whole
    assert key.verify_checksum(MSG21, b"", whole)
    assert not key.verify_checksum(MSG21[:-1], b"", whole)
    assert not key.verify_checksum(MSG21, b"", whole[:-1])


# RFC 8009 A "Sample encryptions", key usage 2: (enctype, base, plaintext length, confounder,
# ciphertext | HMAC)
ENC_8009 = [
    (
        19,
        B128,
        0,
        "7E5895EAF2672435BAD817F545A37148",
        "EF85FB890BB8472F4DAB20394DCA781DAD877EDA39D50C870C0D5A0A8E48C718",
    ),
    (
        19,
        B128,
        6,
        "7BCA285E2FD4130FB55B1A5C83BC5B24",
        "84D7F30754ED987BAB0BF3506BEB09CFB55402CEF7E6877CE99E247E52D16ED4421DFDF8976C",
    ),
    (
        19,
        B128,
        16,
        "56AB21713FF62C0A1457200F6FA9948F",
        "3517D640F50DDC8AD3628722B3569D2AE07493FA8263254080EA65C1008E8FC2"
        "95FB4852E7D83E1E7C48C37EEBE6B0D3",
    ),
    (
        19,
        B128,
        21,
        "A7A4E29A4728CE10664FB64E49AD3FAC",
        "720F73B18D9859CD6CCB4346115CD336C70F58EDC0C4437C5573544C31C813BC"
        "E1E6D072C186B39A413C2F92CA9B8334A287FFCBFC",
    ),
    (
        20,
        B256,
        0,
        "F764E9FA15C276478B2C7D0C4E5F58E4",
        "41F53FA5BFE7026D91FAF9BE959195A058707273A96A40F0A01960621AC612748B9BBFBE7EB4CE3C",
    ),
    (
        20,
        B256,
        6,
        "B80D3251C1F6471494256FFE712D0B9A",
        "4ED7B37C2BCAC8F74F23C1CF07E62BC7B75FB3F637B9F559C7F664F69EAB7B60"
        "92237526EA0D1F61CB20D69D10F2",
    ),
    (
        20,
        B256,
        16,
        "53BF8A0D105265D4E276428624CE5E63",
        "BC47FFEC7998EB91E8115CF8D19DAC4BBBE2E163E87DD37F49BECA92027764F6"
        "8CF51F14D798C2273F35DF574D1F932E40C4FF255B36A266",
    ),
    (
        20,
        B256,
        21,
        "763E65367E864F02F55153C7E3B58AF1",
        "40013E2DF58E8751957D2878BCD2D6FE101CCFD556CB1EAE79DB3C3EE86429F2"
        "B2A602AC86FEF6ECB647D6295FAE077A1FEB517508D2C16B4192E01F62",
    ),
]


@pytest.mark.parametrize(("enctype", "base", "length", "conf", "expected"), ENC_8009)
def test_rfc8009_encryption(
    enctype: int, base: bytes, length: int, conf: str, expected: str
) -> None:
    key = kc.UsageKey(enctype, base, 2)
    plain = MSG21[:length]
    assert key.encrypt(plain, h(conf)) == h(expected)
    assert key.decrypt(h(expected)) == plain


@pytest.mark.parametrize("enctype", [17, 18, 19, 20])
def test_encrypt_matches_rfc3961_definition(enctype: int) -> None:
    """The streamed, pooled encrypt equals the RFC 3961 / 8009 formula on the reference CTS."""
    base = os.urandom(kc.profile(enctype).key_size)
    key = kc.UsageKey(enctype, base, 24)
    prof = kc.profile(enctype)
    ke = kc.derive_key(enctype, base, 24, kc.KE)
    ki = kc.derive_key(enctype, base, 24, kc.KI)
    for length in (0, 1, 15, 16, 17, 31, 32, 33, 1000, 65536):
        conf, plain = os.urandom(16), os.urandom(length)
        c = kc.cts_encrypt(ke, conf + plain)
        signed = bytes(16) + c if prof.etm else conf + plain
        mac = hmac.digest(ki, signed, prof.hash_name)[: prof.mac_size]
        assert key.encrypt(plain, conf) == c + mac, length


@pytest.mark.parametrize("enctype", [17, 18, 19, 20])
def test_seal_open_round_trip_and_segments(enctype: int) -> None:
    """Small (joined) and large (streamed, chunked) paths, whole and split into segments."""
    base = os.urandom(kc.profile(enctype).key_size)
    key, ke = kc.UsageKey(enctype, base, 22), kc.derive_key(enctype, base, 22, kc.KE)
    sizes = (0, 1, 15, 16, 17, 100, 4097, kc.SMALL - 1, kc.SMALL + 1, kc.CHUNK + 7, 200_000)
    for length in sizes:
        data = os.urandom(length)
        sealed = key.seal(b"HDR", data, b"tail-bytes")
        assert sealed[:3] == b"HDR"
        body = bytes(sealed[3:])
        assert len(body) == key.ciphertext_size(length + 10)
        assert kc.cts_decrypt(ke, body[: -key.mac_size])[16:] == data + b"tail-bytes"
        assert key.open([memoryview(body)]) == data + b"tail-bytes"
        for split in (0, 1, 7, 16, len(body) // 2, len(body) - 5, len(body)):
            segs = [memoryview(body)[:split], memoryview(body)[split:]]
            assert key.open(segs) == data + b"tail-bytes", (length, split)


@pytest.mark.parametrize("enctype", [17, 18, 19, 20])
def test_tampering_is_detected(enctype: int) -> None:
    key = kc.UsageKey(enctype, os.urandom(kc.profile(enctype).key_size), 22)
    body = key.encrypt(b"x" * 40)
    for i in (0, 15, 16, 40, len(body) - 1):
        bad = bytearray(body)
        bad[i] ^= 1
        with pytest.raises(kc.CryptoError):
            key.decrypt(bad)
    with pytest.raises(kc.CryptoError):
        key.decrypt(body[:27])
    other = kc.UsageKey(enctype, os.urandom(kc.profile(enctype).key_size), 22)
    with pytest.raises(kc.CryptoError):
        other.decrypt(body)


def test_bad_parameters() -> None:
    with pytest.raises(ValueError):
        kc.profile(23)
    with pytest.raises(ValueError):
        kc.derive_key(18, bytes(16), 1, kc.KC)
    with pytest.raises(ValueError):
        kc.cts_encrypt(CHICKEN, b"short")


@pytest.mark.parametrize("enctype", [17, 18, 19, 20])
def test_small_messages_in_a_row_match_the_reference(enctype: int) -> None:
    """The long-lived CBC contexts carry chaining from one message to the next: every small
    message, sealed with its own or a drawn confounder, is the RFC formula on the reference
    CTS, and opens, whether it fills its last block or not."""
    prof = kc.profile(enctype)
    base = os.urandom(prof.key_size)
    key = kc.UsageKey(enctype, base, 22)
    ke, ki = kc.derive_key(enctype, base, 22, kc.KE), kc.derive_key(enctype, base, 22, kc.KI)
    for length in [*range(0, 70), 112, 128, 240, 256, 496, 512, 3, 1]:
        plain = os.urandom(length)
        body = key.encrypt(plain)
        c = body[: -prof.mac_size]
        decrypted = kc.cts_decrypt(ke, c)
        assert decrypted[16:] == plain, length
        signed = bytes(16) + c if prof.etm else decrypted
        assert body[-prof.mac_size :] == hmac.digest(ki, signed, prof.hash_name)[: prof.mac_size]
        assert key.decrypt(body) == plain
        assert key.decrypt(kc.cts_encrypt(ke, decrypted) + body[-prof.mac_size :]) == plain


@pytest.mark.parametrize("enctype", [18, 20])
def test_threads_each_use_their_own_contexts(enctype: int) -> None:
    """Several threads sealing and opening with one key at once: every message is the RFC
    formula and opens (each thread chains its own CBC contexts)."""
    prof = kc.profile(enctype)
    base = os.urandom(prof.key_size)
    key = kc.UsageKey(enctype, base, 22)
    ke = kc.derive_key(enctype, base, 22, kc.KE)
    failures: list[int] = []

    def work() -> None:
        for length in [*range(0, 40), 128, 300, 20_000] * 5:
            plain = os.urandom(length)
            body = key.encrypt(plain)
            if key.decrypt(body) != plain or kc.cts_decrypt(ke, body[: -prof.mac_size])[16:] != plain:
                failures.append(length)

    run_in_threads(work)
    assert failures == []


@pytest.mark.parametrize("enctype", [17, 18, 19, 20])
def test_a_message_that_fails_half_way_leaves_the_contexts_usable(enctype: int) -> None:
    prof = kc.profile(enctype)
    base = os.urandom(prof.key_size)
    key = kc.UsageKey(enctype, base, 22)
    ke = kc.derive_key(enctype, base, 22, kc.KE)
    with pytest.raises(TypeError):  # the bad trailer is reached after the message was fed
        key.seal(b"", os.urandom(kc.SMALL + 5), 7)  # type: ignore[arg-type]
    for length in (0, 17, 128, kc.SMALL + 9):
        plain = os.urandom(length)
        body = key.encrypt(plain)
        assert kc.cts_decrypt(ke, body[: -prof.mac_size])[16:] == plain
        assert key.decrypt(body) == plain


@pytest.mark.parametrize("enctype", [17, 18, 19, 20])
def test_open_at_checks_and_strips_a_trailer(enctype: int) -> None:
    key = kc.UsageKey(enctype, os.urandom(kc.profile(enctype).key_size), 22)
    for length in (0, 1, 16, 100, 128):
        msg = os.urandom(length)
        body = b"HEAD" + key.encrypt(msg + b"trailer-16-bytes")
        assert key.open_at(body, 4, b"trailer-16-bytes") == msg
        assert key.open_at(body, 4, b"trailer-16-bytez") is None
        assert key.open_at(body, 4) == msg + b"trailer-16-bytes"
    short = key.encrypt(b"trailer-16-byte")  # the plaintext is shorter than the trailer
    assert key.open_at(short, 0, b"xtrailer-16-byte") is None
    assert key.open_at(short, 0, b"trailer-16-byte") == b""

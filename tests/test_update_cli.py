"""`ppmid release` and `ppmid update` as a user meets them: a key, a signed release whose
manifest verifies with the firmware's own verifier and whose files match their digests,
and one-line errors for what a user gets wrong. The update itself, over the broker:
tests/test_e2e_update.py."""
import hashlib
import json
import os
import time

from host_tools import cli
from tests.test_flash import fake_image

GW = "00DB1234567890A4"
from ppmid.update import manifest as M


def _run(capsys, *argv):
    rc = cli.main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def test_make_key_prints_the_public_key_and_never_overwrites(tmp_path, capsys):
    key = str(tmp_path / "op.pem")
    rc, out, err = _run(capsys, "release", "--make-key", key)
    pub = out.strip()
    assert rc == 0 and len(pub) == 130 and pub.startswith("04")
    assert os.stat(key).st_mode & 0o777 == 0o600
    M.public_key(pub)  # the firmware takes it as update.public_key
    rc, out, err = _run(capsys, "release", "--make-key", key)
    assert rc == 1 and "exists" in err and err.startswith("ppmid: ")


def test_a_release_is_signed_and_its_files_match(tmp_path, capsys):
    _signed_release(tmp_path, capsys)


def _signed_release(tmp_path, capsys):
    key = str(tmp_path / "op.pem")
    _, pub, _ = _run(capsys, "release", "--make-key", key)
    out = tmp_path / "rel"
    rc, text, err = _run(capsys, "release", "--board", "emulated", "--key", key, "--out", str(out),
                         "--version", "0.7.1")
    assert rc == 0, err
    offer = json.loads((out / "offer.json").read_text())
    payload = json.dumps({"id": "x", "manifest": offer["manifest"], "signature": offer["signature"]}).encode()
    now = int(time.time())
    oid, m, _ = M.verify_offer(payload, pub.strip(), "emulated", "0.1.0", 1, GW, now, 0)
    assert m["version"] == "0.7.1" and m["board"] == "emulated" and m["downgrade"] is False
    # the replay floor's seq: the signing time in unix seconds unless --seq says otherwise
    assert now - 60 <= m["seq"] <= int(time.time())
    # taken for 30 days by every gateway of the board, then refused
    assert now + 30 * 86400 - 60 <= m["expires"] <= now + 30 * 86400 + 60 and "gateways" not in m
    try:
        M.verify_offer(payload, pub.strip(), "emulated", "0.1.0", 1, GW, m["expires"], 0)
        raise AssertionError("taken after its expiry")
    except M.UpdateError as exc:
        assert exc.code == M.E_UPDATE_EXPIRED
    paths = [f[M.PATH] for f in m["files"]]
    assert "board.json" in paths and "ppmid/app.mpy" in paths and "main.py" not in paths
    for path, size, digest in m["files"]:
        data = (out / "files" / path).read_bytes()
        assert hashlib.sha256(data).digest() == digest and len(data) == size
    # the compiled set carries the release's version
    assert b"0.7.1" in (out / "files" / "ppmid" / "__init__.mpy").read_bytes()
    # the compact form (docs/update.md "Manifest formats"): [path, size, sha256 in base64]
    signed = json.loads(offer["manifest"])
    assert signed["format"] == 2 and signed["files"][0][:2] == ["board.json", m["files"][0][M.SIZE]]
    assert (out / "manifest.json").read_text() == offer["manifest"]
    return m, key, pub.strip()


def test_manifest_format_1_is_the_same_release_for_gateways_that_know_only_it(tmp_path, capsys):
    # the stepping stone: a gateway on a version before format 2 takes only format 1
    m2, key, pub = _signed_release(tmp_path, capsys)
    out = tmp_path / "rel1"
    rc, text, err = _run(capsys, "release", "--board", "emulated", "--key", key, "--out", str(out),
                         "--version", "0.7.1", "--manifest-format", "1")
    assert rc == 0, err
    assert "manifest format 1" in text
    offer = json.loads((out / "offer.json").read_text())
    signed = json.loads(offer["manifest"])
    assert signed["format"] == 1 and all(isinstance(f, dict) and set(f) == {"path", "sha256", "size"}
                                         for f in signed["files"])
    payload = json.dumps({"id": "x", "manifest": offer["manifest"], "signature": offer["signature"]}).encode()
    oid, m1, _ = M.verify_offer(payload, pub, "emulated", "0.1.0", 1, GW, int(time.time()), 0)
    assert m1["files"] == m2["files"]  # the same set, file for file
    assert len(offer["manifest"]) > len((tmp_path / "rel" / "manifest.json").read_text()) * 1.3
    rc, _, err = _run(capsys, "release", "--board", "emulated", "--key", key, "--out", str(out),
                      "--manifest-format", "3")
    assert rc == 1 and "--manifest-format" in err


def _firmware_with_modules(tmp_path, names):
    import shutil
    from host_tools.boards import FIRMWARE_DIR
    fw = tmp_path / "fw"
    shutil.copytree(FIRMWARE_DIR, fw, ignore=shutil.ignore_patterns("__pycache__"))
    for name in names:
        (fw / "ppmid" / name).parent.mkdir(parents=True, exist_ok=True)
        (fw / "ppmid" / name).write_text("X = %r\n" % name)
    return fw


def test_a_release_whose_offer_no_gateway_could_receive_is_refused_with_its_figures(tmp_path, capsys):
    from host_tools import update as U
    key = str(tmp_path / "op.pem")
    _run(capsys, "release", "--make-key", key)
    # modules with long paths (96 characters, check_path's most) until the offer is over the
    # MQTT cap: what no gateway could receive is not written
    deep = "d" * 60 + "/"
    fw = _firmware_with_modules(tmp_path, ["%s%s%02d.py" % (deep, "m" * 25, i) for i in range(45)])
    out = tmp_path / "rel"
    out.mkdir()
    (out / "kept").write_text("a release written before")
    rc, text, err = _run(capsys, "release", "--board", "emulated", "--key", key, "--out", str(out),
                         "--firmware-dir", str(fw))
    assert rc == 1 and err.startswith("ppmid: E_UPDATE_OFFER_SIZE: ") and len(err.strip().splitlines()) == 1, err
    size = int(err.split("would be a ")[1].split("-byte")[0])
    over = int(err.split("), ")[1].split(" bytes over")[0])
    assert size - over == U.OFFER_PACKET_MAX == 16384 and over > 0 and "not written" in err
    assert sorted(os.listdir(out)) == ["kept"]
    # the sender measures the offer it is about to publish too (a release from before the check)
    from host_tools.update import OfferTooLarge, check_offer_size
    overhead = 2 + len("ppmid/v1/%s/update/offer" % GW) + 2  # the topic's length field, the topic, the packet id
    try:
        check_offer_size(b"x" * (U.OFFER_PACKET_MAX - overhead + 1), "an offer", GW)
    except OfferTooLarge as exc:
        assert exc.code == "E_UPDATE_OFFER_SIZE" and "1 bytes over" in exc.message
    else:
        raise AssertionError("an offer one byte over the cap was taken")
    assert check_offer_size(b"x" * (U.OFFER_PACKET_MAX - overhead), "an offer", GW) == U.OFFER_PACKET_MAX


def test_a_set_of_more_files_than_a_gateway_takes_is_refused(tmp_path, capsys):
    key = str(tmp_path / "op.pem")
    _run(capsys, "release", "--make-key", key)
    fw = _firmware_with_modules(tmp_path, ["x%03d.py" % i for i in range(M.MAX_FILES)])
    rc, text, err = _run(capsys, "release", "--board", "emulated", "--key", key, "--out", str(tmp_path / "rel"),
                         "--firmware-dir", str(fw))
    assert rc == 1 and "a gateway takes %d at most" % M.MAX_FILES in err and not (tmp_path / "rel").exists(), err


def test_release_errors_are_one_line(tmp_path, capsys):
    key = tmp_path / "op.pem"
    rc, _, err = _run(capsys, "release", "--board", "emulated")
    assert rc == 1 and "--key" in err
    _run(capsys, "release", "--make-key", str(key))
    rc, _, err = _run(capsys, "release", "--board", "emulated", "--key", str(key), "--out", str(tmp_path / "r"),
                      "--version", "1.x")
    assert rc == 1 and "not digits and dots" in err
    (tmp_path / "junk.pem").write_text("not a key")
    rc, _, err = _run(capsys, "release", "--board", "emulated", "--key", str(tmp_path / "junk.pem"),
                      "--out", str(tmp_path / "r"))
    assert rc == 1 and "not an unencrypted PEM private key" in err
    rc, _, err = _run(capsys, "release", "--board", "no-such-board", "--key", str(key), "--out", str(tmp_path / "r"))
    assert rc == 1 and "no-such-board" in err
    assert len(err.strip().splitlines()) == 1


def test_update_refuses_what_is_not_a_release(tmp_path, capsys):
    rc, _, err = _run(capsys, "update", "--state-dir", str(tmp_path), "--gateway", "00DB1234567890A4",
                      "--release", str(tmp_path))
    assert rc == 1 and "is not a release" in err
    rc, _, err = _run(capsys, "update", "--state-dir", str(tmp_path), "--gateway", "nothex",
                      "--release", str(tmp_path))
    assert rc == 1 and err.startswith("ppmid: ")
    # review 90 H1: an offer.json whose signed text is not a manifest the sender can read
    # (no files, files not a list of paths, not an object, no version) is no release either,
    # not E_INTERNAL (a KeyError, exit 3)
    from host_tools.update import Release, UpdateError
    rel = tmp_path / "rel"
    rel.mkdir()
    for text, why in (({"version": "0.2.0"}, "no 'files' in it"), ([1, 2], "not a manifest"),
                      ({"files": []}, "no 'version' in it"),
                      ({"version": "0.2.0", "files": ["a.py"]}, "files are not a list"),
                      ({"version": "0.2.0", "files": "a.py"}, "files are not a list")):
        (rel / "offer.json").write_text(json.dumps({"manifest": json.dumps(text), "signature": "00"}))
        rc, _, err = _run(capsys, "update", "--state-dir", str(tmp_path / "state"), "--gateway", GW,
                          "--release", str(rel))
        assert rc == 1 and err.startswith("ppmid: ") and "is not a release" in err and why in err, err
        assert len(err.strip().splitlines()) == 1
        try:
            Release(str(rel))
        except UpdateError as exc:
            assert exc.code == "E_UPDATE" and why in exc.message
        else:
            raise AssertionError("taken as a release: %r" % (text,))


def test_an_image_release_is_signed_and_names_the_image(tmp_path, capsys):
    key = str(tmp_path / "op.pem")
    _, pub, _ = _run(capsys, "release", "--make-key", key)
    img = tmp_path / "fw.bin"
    fake_image(img, 0, size=5000)  # chip id 0: the ESP32's (esp32-devkitc)
    out = tmp_path / "rel"
    rc, text, err = _run(capsys, "release", "--board", "esp32-devkitc", "--key", key, "--out", str(out),
                         "--version", "1.1.0", "--image", str(img))
    assert rc == 0 and "image 1.1.0, 5000 bytes" in text, err
    offer = json.loads((out / "offer.json").read_text())
    payload = json.dumps({"id": "x", "manifest": offer["manifest"], "signature": offer["signature"]}).encode()
    _, m, _ = M.verify_offer(payload, pub.strip(), "esp32-devkitc", "1.0.0", 1, GW, int(time.time()), 0)
    assert "files" not in m and m["image"] == {"sha256": hashlib.sha256(img.read_bytes()).hexdigest(), "size": 5000}
    assert (out / "files" / "image.bin").read_bytes() == img.read_bytes()
    # an image needs its version, and a file that is there
    rc, _, err = _run(capsys, "release", "--board", "emulated", "--key", key, "--out", str(out), "--image", str(img))
    assert rc == 1 and "--image needs --version" in err and err.count("\n") == 1
    rc, _, err = _run(capsys, "release", "--board", "emulated", "--key", key, "--out", str(out), "--version", "1.2.0",
                      "--image", str(tmp_path / "nope.bin"))
    assert rc == 1 and "cannot read the image" in err and err.count("\n") == 1


def test_an_image_release_refuses_what_the_board_could_not_boot_and_bad_arguments(tmp_path, capsys):
    # review M3/L5: set_boot() on the board would refuse these only after the whole download
    key = str(tmp_path / "op.pem")
    _run(capsys, "release", "--make-key", key)
    out = tmp_path / "rel"

    def release(img, board="esp32-devkitc", *more):
        return _run(capsys, "release", "--board", board, "--key", key, "--out", str(out), "--version", "1.2.0",
                    "--image", str(img), *more)
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"\xff\xfe")
    rc, _, err = release(junk)
    assert rc == 1 and "not an ESP32 image (first byte 0xff, expected 0xe9)" in err and err.count("\n") == 1, err
    s3 = fake_image(tmp_path / "s3.bin", 9)
    rc, _, err = release(s3)
    assert rc == 1 and "image for esp32s3" in err and "board's chip is esp32 " in err, err
    rc, text, err = release(s3, "esp32s3-devkitc-1")
    assert rc == 0, err
    rc, _, err = release(s3, "../../../etc")
    assert rc == 1 and "unknown board '../../../etc'" in err, err
    rc, _, err = release(s3, "esp32s3-devkitc-1", "--min-config-version", "-3")
    assert rc == 1 and "--min-config-version must be a whole number from 1" in err, err
    rc, _, err = release(s3, "esp32s3-devkitc-1", "--min-config-version", "0")
    assert rc == 1 and "--min-config-version" in err, err


def test_a_set_release_refuses_a_config_version_below_1(tmp_path, capsys):
    key = str(tmp_path / "op.pem")
    _run(capsys, "release", "--make-key", key)
    rc, _, err = _run(capsys, "release", "--board", "emulated", "--key", key, "--out", str(tmp_path / "r"),
                      "--min-config-version", "0")
    assert rc == 1 and "--min-config-version must be a whole number from 1" in err and err.count("\n") == 1, err
    assert not (tmp_path / "r").exists()


def test_a_downgrade_names_its_gateways_and_the_expiry_is_chosen(tmp_path, capsys):
    # review M4: a signed downgrade for every gateway could be replayed by any DCC User
    key = str(tmp_path / "op.pem")
    _, pub, _ = _run(capsys, "release", "--make-key", key)
    img = fake_image(tmp_path / "fw.bin", 0)
    out = tmp_path / "rel"

    def release(*more):
        return _run(capsys, "release", "--board", "esp32-devkitc", "--key", key, "--out", str(out),
                    "--version", "1.0.0", "--image", img, *more)
    rc, _, err = release("--downgrade")
    assert rc == 1 and "a downgrade must name the gateways it is for" in err and err.count("\n") == 1, err
    rc, _, err = release("--downgrade", "--gateway", "00db")
    assert rc == 1 and "'00db' is not an EUI-64" in err, err
    for bad in ("0", "-1", str(11 * 366 * 86400)):
        rc, _, err = release("--expires-in", bad)
        assert rc == 1 and "--expires-in must be 1 s to 10 years" in err, err
    rc, _, err = release("--downgrade", "--gateway", GW.lower(), "--gateway", "00DB000000000001", "--expires-in",
                         str(2 * 86400))
    assert rc == 0, err
    offer = json.loads((out / "offer.json").read_text())
    m = json.loads(offer["manifest"])
    assert m["gateways"] == ["00DB000000000001", GW] and m["downgrade"] is True
    assert abs(m["expires"] - (time.time() + 2 * 86400)) < 60
    payload = json.dumps({"id": "x", "manifest": offer["manifest"], "signature": offer["signature"]}).encode()
    assert M.verify_offer(payload, pub.strip(), "esp32-devkitc", "1.1.0", 1, GW, int(time.time()), 0)[1] == m
    try:
        M.verify_offer(payload, pub.strip(), "esp32-devkitc", "1.1.0", 1, "00DB000000000002", int(time.time()), 0)
        raise AssertionError("taken by a gateway it does not name")
    except M.UpdateError as exc:
        assert exc.code == M.E_UPDATE_GATEWAY


def test_seq_is_signed_and_set_by_seq_and_a_gateway_refuses_one_not_above_its_floor(tmp_path, capsys):
    # docs/update.md "Replay"
    key = str(tmp_path / "op.pem")
    _, pub, _ = _run(capsys, "release", "--make-key", key)
    img = fake_image(tmp_path / "fw.bin", 0)
    out = tmp_path / "rel"

    def release(*more):
        return _run(capsys, "release", "--board", "esp32-devkitc", "--key", key, "--out", str(out),
                    "--version", "1.2.0", "--image", img, *more)

    def signed():
        offer = json.loads((out / "offer.json").read_text())
        payload = json.dumps({"id": "x", "manifest": offer["manifest"], "signature": offer["signature"]}).encode()
        return payload, json.loads(offer["manifest"])
    for seq in (1, 4294967295, 1767225600):
        rc, _, err = release("--seq", str(seq))
        assert rc == 0, err
        payload, m = signed()
        assert m["seq"] == seq
    now = int(time.time())
    assert M.verify_offer(payload, pub.strip(), "esp32-devkitc", "1.0.0", 1, GW, now, 1767225599)[1] == m
    for floor in (1767225600, 4294967295):
        try:
            M.verify_offer(payload, pub.strip(), "esp32-devkitc", "1.0.0", 1, GW, now, floor)
            raise AssertionError("taken at floor %d" % floor)
        except M.UpdateError as exc:
            assert exc.code == M.E_UPDATE_REPLAY
    before = (out / "offer.json").read_text()
    for bad in ("0", "-1", "4294967296"):
        rc, _, err = release("--seq", bad)
        assert rc == 1 and err == "ppmid: E_UPDATE: --seq must be a whole number from 1 to 4294967295 (it fits 32 bits), " \
            "not %s\n" % bad, err
    for bad in ("1e3", "x"):  # no integer: argparse's usage error (exit 2), as for every int option
        try:
            release("--seq", bad)
            raise AssertionError("accepted --seq " + bad)
        except SystemExit as exc:
            assert exc.code == 2
        assert "argument --seq: invalid int value" in capsys.readouterr().err
    assert (out / "offer.json").read_text() == before  # nothing written by a refusal

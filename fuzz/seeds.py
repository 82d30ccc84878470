#!/usr/bin/env python3
"""Writes the committed seed corpora of the fuzz targets (fuzz/corpus/<target>/).

Each seed is an input berth's own tests use (the test named beside it), rebuilt here so the
corpus can be regenerated: `python3 fuzz/seeds.py`. Needs GNU tar (sparse entries) and zstd.
Every seed is small: the fuzzers mutate them, and the committed corpus stays a few hundred KB.
"""

import gzip
import io
import json
import os
import shutil
import subprocess
import tarfile
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
CORPUS = os.path.join(HERE, "corpus")

D1 = "sha256:" + "1" * 64
D2 = "sha256:" + "2" * 64
# A P-256 public key (PEM, base64), only for its shape: policies name one.
KEY = (
    "LS0tLS1CRUdJTiBQVUJMSUMgS0VZLS0tLS0KTUZrd0V3WUhLb1pJemowQ0FRWUlLb1pJemowREFRY0RRZ0FFRHRSNldnc2hW"
    "STJlVVNVNldlbWQwT3VXYmVxNApaV2daTGhnak44SWZNeHBtQVJqb0NKYjhCMGhWSDFDVW04T2JpSHhmTFZDNnJHWGs3TnVw"
    "ZFNmSHJ3PT0KLS0tLS1FTkQgUFVCTElDIEtFWS0tLS0tCg=="
)


def write(target, name, data):
    d = os.path.join(CORPUS, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def js(v):
    return json.dumps(v, separators=(",", ":"))


# ---- tar layers (src/image/layers/unpack.rs tests, tests/unpack.rs) ----


def tar_of(entries, fmt=tarfile.GNU_FORMAT):
    """entries: (kind, path, arg, extra) with kind in dir/file/sym/hard/fifo/char/raw."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=fmt) as t:
        for e in entries:
            kind, path = e[0], e[1]
            arg = e[2] if len(e) > 2 else None
            extra = e[3] if len(e) > 3 else {}
            i = tarfile.TarInfo(path)
            i.mtime = 1_600_000_000
            i.mode = extra.get("mode", 0o755 if kind == "dir" else 0o644)
            i.uid, i.gid = extra.get("uid", 0), extra.get("gid", 0)
            if "pax" in extra:
                i.pax_headers = extra["pax"]
            data = None
            if kind == "dir":
                i.type = tarfile.DIRTYPE
            elif kind == "file":
                i.type, i.size, data = tarfile.REGTYPE, len(arg), io.BytesIO(arg)
            elif kind == "sym":
                i.type, i.linkname = tarfile.SYMTYPE, arg
            elif kind == "hard":
                i.type, i.linkname = tarfile.LNKTYPE, arg
            elif kind == "fifo":
                i.type = tarfile.FIFOTYPE
            elif kind == "char":
                i.type, i.devmajor, i.devminor = tarfile.CHRTYPE, 1, 3
            t.addfile(i, data)
    return trimmed(out.getvalue())


def trimmed(tar):
    """The archive without tarfile's padding to 10 KB: its entries and the two zero blocks."""
    body = tar.rstrip(b"\0")
    body += b"\0" * (-len(body) % 512)
    return body + b"\0" * 1024


def raw_entry(name, data):
    """A tar whose entry name tarfile would write as given, `..` included."""
    i = tarfile.TarInfo(name)
    i.size, i.mode, i.mtime = len(data), 0o644, 1_600_000_000
    pad = b"\0" * (-len(data) % 512)
    return i.tobuf(format=tarfile.USTAR_FORMAT) + data + pad + b"\0" * 1024


def sparse_tar(fmt):
    """GNU tar's sparse entries, old GNU ('S') or PAX 1.0: a mostly-hole file."""
    with tempfile.TemporaryDirectory() as d:
        f = os.path.join(d, "sparse")
        with open(f, "wb") as w:
            w.seek(64 << 10)
            w.write(b"data")
            w.seek(128 << 10)
            w.write(b"end")
        out = os.path.join(d, "out.tar")
        subprocess.run(
            ["tar", "--sparse", f"--format={fmt}", "--owner=0", "--group=0",
             "--mtime=@1600000000", "--numeric-owner", "-C", d, "-cf", out, "sparse"]
            # the same bytes each time: no process id or access times in PAX headers
            + (["--pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime"]
               if fmt == "posix" else []),
            check=True,
        )
        with open(out, "rb") as r:
            return trimmed(without_pid(r.read()))


def without_pid(tar):
    """GNU tar names a PAX sparse member GNUSparseFile.<its pid>: made the same each time."""
    blocks = bytearray(tar)
    for at in range(0, len(blocks), 512):
        header = blocks[at:at + 512]
        name = bytes(header[:100]).rstrip(b"\0")
        if header[257:262] != b"ustar" or b"GNUSparseFile." not in name:
            continue
        prefix, rest = name.split(b"GNUSparseFile.", 1)
        name = prefix + b"GNUSparseFile.0/" + rest.split(b"/", 1)[1]
        header[:100] = name.ljust(100, b"\0")
        header[148:156] = b" " * 8
        header[148:156] = b"%06o\0 " % sum(header)
        blocks[at:at + 512] = header
    return bytes(blocks)


def unpack_seeds():
    layers = {
        # files_dirs_links_and_modes
        "files_dirs_links": tar_of([
            ("dir", "etc"), ("file", "etc/hello", b"hi", {"mode": 0o640}),
            ("sym", "etc/link", "hello"), ("hard", "etc/hard", "etc/hello"),
        ]),
        # missing_parents_are_0755_and_modes_ignore_a_strict_umask
        "setid_and_fifo": tar_of([
            ("file", "usr/bin/x", b"x", {"mode": 0o4755}), ("fifo", "run/fifo", None, {"mode": 0o666}),
        ]),
        # whiteouts_and_opaque_directories
        "whiteouts": tar_of([
            ("file", "a/.wh.gone", b""), ("dir", "o"), ("dir", "o/sub"), ("file", "o/sub/new", b"2"),
            ("file", "o/.wh..wh..opq", b""), ("file", "o/new", b"2"),
        ]),
        # a_file_replaces_a_directory_and_back
        "replace": tar_of([("dir", "x"), ("file", "x/y", b"1"), ("file", "x", b"file"), ("dir", "x")]),
        # dotdot_escape_refuses_the_layer, tests/unpack.rs escape_cases
        "dotdot": raw_entry("../escaped", b"evil"),
        "dotdot_canary": raw_entry("../../outside/precious", b"evil"),
        # writing_through_a_symlink_is_refused (relative, aimed at the fuzz canary)
        "symlink_parent": tar_of([("sym", "up", "../../outside"), ("file", "up/planted", b"x")]),
        "symlink_abs_parent": tar_of([("sym", "evil", "/tmp"), ("file", "evil/planted", b"x")]),
        # whiteout_through_a_symlink_is_refused
        "whiteout_symlink": tar_of([("sym", "evil", "../../outside"), ("file", "evil/.wh.precious", b"")]),
        # hard_link_out_of_the_root_is_refused
        "hardlink_out": tar_of([("hard", "h", "../../outside/precious")]),
        "hardlink_lower": tar_of([("hard", "h", "lower/file")]),
        # device_nodes_are_skipped_and_counted_and_xattrs_filtered
        "device_xattrs": tar_of([
            ("char", "dev/null"),
            ("file", "f", b"x", {"pax": {
                "SCHILY.xattr.user.kept": "1",
                "SCHILY.xattr.trusted.overlay.redirect": "/etc",
                "SCHILY.xattr.user.overlay.opaque": "y",
            }}),
        ], fmt=tarfile.PAX_FORMAT),
        # owned_tar (an_owner_outside_the_range_is_refused)
        "owners": tar_of([
            ("file", "bin/su", b"x", {"mode": 0o4755, "uid": 70000, "gid": 50}),
            ("hard", "su2", "bin/su"), ("sym", "link", "/nowhere"),
        ]),
        # tests/unpack.rs layered_spec (the second layer)
        "layered": tar_of([
            ("file", "etc/.wh.gone", b""), ("dir", "opaque"), ("file", "opaque/.wh..wh..opq", b""),
            ("file", "opaque/new", b"upper"), ("hard", "links/hard", "links/target"),
            ("sym", "links/soft", "target"), ("sym", "links/abs", "/etc/keep"),
            ("file", "replace-me", b"now a file"),
        ]),
        # long names: GNU long-name records and PAX paths
        "gnu_longname": tar_of([("file", "d/" + "n" * 150, b"long"), ("sym", "l" * 120, "t" * 120)]),
        "pax_path": tar_of([("dir", "p" * 120), ("file", "p" * 120 + "/f", b"x", {"pax": {"mtime": "1.5"}})],
                           fmt=tarfile.PAX_FORMAT),
        "root_and_absolute": tar_of([("dir", "./"), ("dir", "/abs"), ("file", "/abs/f", b"x"), ("file", "./rel", b"y")]),
        "sparse_gnu": sparse_tar("gnu"),
        "sparse_pax": sparse_tar("posix"),
    }
    for name, data in layers.items():
        write("unpack", name + ".tar", data)
    # gzip_and_zstd_layers
    plain = layers["files_dirs_links"]
    write("unpack", "files_dirs_links.tar.gz", gzip.compress(plain, mtime=0))
    zst = subprocess.run(["zstd", "-q", "-c", "-3"], input=plain, capture_output=True, check=True)
    write("unpack", "files_dirs_links.tar.zst", zst.stdout)
    write("unpack", "whiteouts.tar.gz", gzip.compress(layers["whiteouts"], mtime=0))
    # tests/unpack.rs oversized_tar_headers_are_refused_without_being_buffered: extension
    # headers past the 1 MiB cap, a few KB gzipped (before the cap, 40 MiB of PAX record
    # grew the heap by 67 MB, which the target's meter catches)
    bombs = {
        "pax_record_40mib": tar_of([("file", "f", b"x", {"pax": {"comment": "a" * (40 << 20)}})],
                                   fmt=tarfile.PAX_FORMAT),
        "gnu_longname_2mib": tar_of([("file", "n" * (2 << 20), b"x")]),
    }
    for name, data in bombs.items():
        write("unpack", name + ".tar.gz", gzip.compress(data, 9, mtime=0))


# ---- manifests, indexes and configs (src/image/spec/manifest.rs tests) ----


def manifest_seeds():
    oci = "application/vnd.oci.image.manifest.v1+json"
    write("manifest", "oci_manifest.json", js({
        "schemaVersion": 2, "mediaType": oci,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": D1, "size": 10},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": D2, "size": 20}],
    }))
    write("manifest", "docker_manifest.json", js({
        "schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "digest": D1, "size": 10},
        "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "digest": D2, "size": -1}],
    }))
    write("manifest", "index.json", js({
        "schemaVersion": 2, "manifests": [
            {"mediaType": oci, "digest": D1, "size": 1, "platform": {"os": "linux", "architecture": "s390x"}},
            {"mediaType": oci, "digest": D2, "size": 1,
             "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"}},
            {"mediaType": oci, "digest": D2, "size": 1, "platform": {"os": "linux", "architecture": "amd64"}},
        ],
    }))
    write("manifest", "config.json", js({
        "architecture": "amd64", "os": "linux",
        "config": {"User": "1000:1000", "Env": ["PATH=/bin"], "Entrypoint": ["/bin/sh", "-c"],
                   "Cmd": ["true"], "WorkingDir": "/data"},
        "rootfs": {"type": "layers", "diff_ids": [D1, D2]},
    }))
    write("manifest", "config_null.json", js({"os": "linux", "config": None,
                                              "rootfs": {"type": "layers", "diff_ids": [D1]}}))


# ---- output manifests (src/mapping/output.rs tests and conformance_tests) ----


def output_manifest_seeds():
    seeds = {
        "destination": ("manifested.csv", {"destination": "out.c-m.from-manifest"}),
        "sliced": ("sliced", {"columns": ["a"]}),
        "file_tags": ("report.pdf", {"tags": ["from-manifest"], "is_permanent": True}),
        "current_format": ("t.csv", {
            "destination": "out.c-x.t", "incremental": True, "write_always": False,
            "delimiter": ",", "enclosure": "\"", "manifest_type": "out", "has_header": False,
            "table_metadata": {"KBC.description": "orders", "rows": 2},
            "schema": [
                {"name": "id", "data_type": {"base": {"type": "INTEGER"}}, "nullable": False,
                 "primary_key": True},
                {"name": "amount", "data_type": {"base": {"type": "NUMERIC", "length": "12,2"},
                                                 "snowflake": {"type": "NUMBER", "default": 0}},
                 "nullable": True, "description": "in EUR", "metadata": {"unit": "EUR", "precise": True}},
            ],
        }),
        "header_and_keys": ("t.csv", {
            "manifest_type": "out", "has_header": True, "destination": "out.c-x.t",
            "schema": [{"name": "a", "primary_key": True}, {"name": "b"}],
            "tags": ["staging"], "distribution_key": ["a"], "description": "d",
            "unload_strategy": "direct-grant", "deduplication_strategy": "insert",
        }),
        "metadata_scalars": ("t.csv", {
            "destination": "out.c-x.t", "columns": ["id", "v"],
            "metadata": [{"key": "n", "value": 7}, {"key": "f", "value": 1.5}, {"key": "none", "value": None}],
            "column_metadata": {"id": [{"key": "KBC.datatype.nullable", "value": False}],
                                "v": [{"key": "KBC.datatype.length", "value": 10}]},
        }),
        "delete_where_old": ("t.csv", {
            "destination": "out.c-x.t", "columns": ["id", "v"], "incremental": True,
            "primary_key": ["id"], "delimiter": ";", "enclosure": "'", "write_always": True,
            "delete_where_column": "v", "delete_where_values": ["1"], "delete_where_operator": "ne",
        }),
        "delete_where_list": ("t.csv", {
            "destination": "out.c-x.t", "columns": ["a", "b"], "incremental": True,
            "delete_where": [{"where_filters": [{"column": "a", "operator": "ne",
                                                 "values_from_set": ["1", "2"]}]}],
        }),
        "default_bucket": ("t.csv.gz", {"columns": ["a"], "delimiter": ";;"}),
    }
    for seed, (name, manifest) in seeds.items():
        write("output_manifest", seed, name + "\n" + js(manifest))


# ---- policy.json (src/image/verify/policy.rs tests, tests/signatures.rs) ----


def policy_seeds():
    write("policy", "scopes.json", js({
        "default": [{"type": "reject"}],
        "transports": {"docker": {
            "127.0.0.1:5000": [{"type": "insecureAcceptAnything"}],
            "127.0.0.1:5000/acme": [{"type": "sigstoreSigned", "keyData": KEY,
                                     "signedIdentity": {"type": "matchRepository"}}],
            "127.0.0.1:5000/acme/app:1": [{"type": "sigstoreSigned", "keyData": KEY,
                                           "signedIdentity": {"type": "exactReference",
                                                              "dockerReference": "127.0.0.1:5000/acme/app:1"}}],
            "registry.example.com/acme": [{"type": "sigstoreSigned", "keyData": KEY,
                                           "signedIdentity": {"type": "exactRepository",
                                                              "dockerRepository": "registry.example.com/acme/x"}}],
            "*.example.com": [{"type": "sigstoreSigned", "keyData": KEY,
                               "signedIdentity": {"type": "matchExact"}}],
            "docker.io": [{"type": "sigstoreSigned", "keyData": KEY}],
        }},
    }))
    write("policy", "local.json", js({
        "default": [{"type": "reject"}],
        "transports": {"oci": {"/var/lib/images": [{"type": "insecureAcceptAnything"}],
                               "/var/lib/images/app:1": [{"type": "reject"}]},
                       "docker-archive": {"": [{"type": "insecureAcceptAnything"}]}},
    }))
    write("policy", "signed_by.json", js({"default": [{"type": "signedBy", "keyType": "GPGKeys",
                                                       "keyPath": "/k.gpg"}]}))
    write("policy", "key_path.json", js({"default": [{"type": "sigstoreSigned",
                                                      "keyPath": "/nonexistent.pub"}]}))


# ---- CSV (src/storage/csv_reader.rs tests); the first byte is the dialect ----


def csv_seeds():
    seeds = {
        "rfc4180": b'a,b\r\n"x,1","say ""hi"""\r\n"multi\nline",\r\n"",z',
        "bom_blank_lines": b"\xef\xbb\xbfa,b\n\n1,2\n\r\n3,4\n\n",
        "after_quote": b'a,b\n1,2\n"x"y,3\n',
        "quote_inside": b'a,b\n1,2\n3,x"y\n',
        "unclosed": b'a,b\n1,2\n3,"x\n4,5\n6,7\n',
        "bad_utf8": b"a,b\n1,2\n3,\xff\n",
        "split_char": b"a,b\n\xc3,\xa9\n",
        "widths": b"a,b\n1,2\n3\n",
    }
    for name, data in seeds.items():
        write("csv", name, b"\x00" + data)
    # the same in small reads, and other dialects
    write("csv", "rfc4180_chunked", b"\x18" + seeds["rfc4180"])
    write("csv", "tab_single_quote", b"\x01" + b"a\tb\n'x\t1'\t'it''s'\n")
    write("csv", "no_header_width2", b"\x24" + b"1,2\n3,4\n")
    write("csv", "custom_dialect", b"\x03" + b'|"a|b\n"1"|2\n')


# ---- credentials (src/image/distribution/auth.rs tests, tests/auth.rs) ----


def auth_seeds():
    write("auth", "auths.json", js({"auths": {
        "127.0.0.1:5000": {"auth": "dXNlcjpwYXNz"},
        "https://index.docker.io/v1/": {"username": "u", "password": "p"},
        "registry.example.com/a/b": {"auth": "YTpiOmM="},
        "registry.example.com": {},
    }}))
    write("auth", "helpers.json", js({"auths": {"docker.io": {}},
                                      "credHelpers": {"registry.example.com": "pass"},
                                      "credsStore": "desktop"}))
    write("auth", "not_base64.json", js({"auths": {"127.0.0.1:5000": {"auth": "%%%"}}}))
    write("auth", "bad_json.json", '{"auths": {"reg": {"auth": "c2VjcmV0"}} oops')
    write("auth", "challenge_basic", 'Basic realm="Registry Realm"')
    write("auth", "challenge_bearer",
          'Bearer realm="https://auth.example/token",service="reg",scope="repository:a/b:pull,push"')
    write("auth", "challenge_escaped", 'bearer realm="http://127.0.0.1:1/t\\"x", service=s,scope=')
    write("auth", "token.json", js({"token": "t", "access_token": "a", "expires_in": 300}))


# ---- registries.conf (src/image/distribution/registries_conf.rs tests, tests/registries_conf.rs) ----


def registries_conf_seeds():
    write("registries_conf", "mirrors.conf", """unqualified-search-registries = ["127.0.0.1:5000"]

[[registry]]
prefix = "example.com/foo"
location = "127.0.0.1:5000/mirror/foo"
insecure = true

[[registry.mirror]]
location = "127.0.0.1:5001"
pull-from-mirror = "digest-only"

[[registry.mirror]]
location = "127.0.0.1:5002/cache"
""")
    write("registries_conf", "blocked_wildcard.conf", """[[registry]]
prefix = "*.example.com"
blocked = true

[[registry]]
location = "docker.io"
blocked = true
""")
    write("registries_conf", "aliases.conf", """unqualified-search-registries = ["127.0.0.1:5000", "127.0.0.1:5001"]

[aliases]
"app" = "127.0.0.1:5000/acme/app"
"acme/app" = "127.0.0.1:5001/acme/app"
""")
    write("registries_conf", "bad_line.conf", '[[registry]]\nlocation = "a"\nbogus = 1\n')


# ---- job files (examples/hello.json, tests/common job()) ----


def job_seeds():
    with open(os.path.join(HERE, "..", "examples", "hello.json"), "rb") as f:
        write("job", "hello.json", f.read())
    write("job", "rows_processors.json", js({
        "component": {"id": "acme.test", "image": "127.0.0.1:5000/acme/t:1", "memory": "64m",
                      "configuration_schema": {"type": "object", "required": ["n"],
                                               "properties": {"n": {"type": "integer", "minimum": 1},
                                                              "s": {"type": "string", "pattern": "^[a-z]+$"}}}},
        "config_id": "42",
        "configuration": {"parameters": {"n": 1, "#secret": "x"},
                          "runtime": {"image_tag": "2", "process_timeout": 60},
                          "storage": {"input": {"tables": [{"source": "in.c-a.t", "destination": "t.csv",
                                                            "columns": ["a"], "where_column": "a",
                                                            "where_values": ["1"], "where_operator": "ne"}]}}},
        "rows": [{"id": "r1", "configuration": {"parameters": {"n": 2}}},
                 {"id": "r2", "is_disabled": True, "configuration": {}}],
    }))
    write("job", "named_component.json", js({
        "component": "acme.known",
        "configuration": {"parameters": {}, "processors": {"before": [
            {"definition": {"component": "acme.proc"}, "parameters": {"x": 1}}]}},
    }))


# ---- sigstore bundles (src/image/verify/bundle.rs tests, tests/common/sigstore.rs) ----


def sigstore_bundle_seeds():
    import base64
    top = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    statement = {
        "_type": "https://in-toto.io/Statement/v1",
        "subject": [{"name": "127.0.0.1:5000/acme/app", "digest": {"sha256": top}}],
        "predicateType": "https://sigstore.dev/cosign/sign/v1",
        "predicate": {},
    }
    write("sigstore_bundle", "statement.json", js(statement))
    # A signature of the right shape (DER SEQUENCE of two INTEGERs) that verifies with no key.
    der = bytes([0x30, 0x06, 0x02, 0x01, 0x01, 0x02, 0x01, 0x01])
    bundle = {
        "mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json",
        "verificationMaterial": {"publicKey": {"hint": "fuzz"}},
        "dsseEnvelope": {
            "payload": base64.b64encode(js(statement).encode()).decode(),
            "payloadType": "application/vnd.in-toto+json",
            "signatures": [{"sig": base64.b64encode(der).decode(), "keyid": ""}],
        },
    }
    write("sigstore_bundle", "bundle.json", js(bundle))
    message = {
        "mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json",
        "messageSignature": {
            "messageDigest": {"algorithm": "SHA2_256", "digest": base64.b64encode(b"0" * 32).decode()},
            "signature": base64.b64encode(der).decode(),
        },
    }
    write("sigstore_bundle", "message_signature.json", js(message))


def main():
    shutil.rmtree(CORPUS, ignore_errors=True)
    unpack_seeds()
    manifest_seeds()
    output_manifest_seeds()
    policy_seeds()
    csv_seeds()
    auth_seeds()
    registries_conf_seeds()
    job_seeds()
    sigstore_bundle_seeds()


if __name__ == "__main__":
    main()

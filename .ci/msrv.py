#!/usr/bin/env python3
"""What can be checked of the MSRV promise (`rust-version`) without an old toolchain.

No toolchain older than the current one can be installed here, so this checks the
library as it would be published, the way a user on the MSRV would get it:

1. `cargo package` gives the published manifest (library target only); its
   dev-dependencies are dropped, because they are not built by users of the crate.
2. A lockfile is resolved for that manifest with cargo's MSRV-aware resolver
   (`incompatible-rust-versions = "fallback"`): for every dependency it prefers the
   newest version whose declared `rust-version` is at most ours.
3. For the library with no features and with each optional feature alone, every
   dependency that gets built (normal and build dependencies, for every target
   platform, from `cargo tree`) must declare a `rust-version` no higher than that
   feature's MSRV (or declare none). The MSRV per feature is `rust-version`, unless
   FEATURE_MSRV below raises it for a feature.
4. Against that lockfile, `cargo clippy --lib --all-features` with
   `clippy::incompatible_msrv` denied: the crate compiles with those (older)
   dependency versions, and uses no std item stabilised after `rust-version`.

What it cannot check: that the dependencies really build on the MSRV (their
declarations are trusted), and language syntax newer than the MSRV (the lint looks
at std items only).

Run from anywhere in the repository: `python3 .ci/msrv.py`. It needs crates.io.
"""

import json
import os
import shutil
import subprocess
import sys
import tarfile
import tomllib
from pathlib import Path

# Features whose MSRV is higher than `rust-version`, with the reason. Empty: with the
# versions the MSRV-aware resolver picks, every feature builds its dependencies on
# `rust-version`.
FEATURE_MSRV: dict[str, str] = {}

ROOT = Path(__file__).resolve().parent.parent


def run(args, cwd, env=None, capture=True):
    result = subprocess.run(
        args, cwd=cwd, env=env, text=True,
        stdout=subprocess.PIPE if capture else None,
        stderr=subprocess.PIPE if capture else None,
    )
    if result.returncode != 0:
        if capture:
            sys.stderr.write(result.stdout + result.stderr)
        sys.exit(f"msrv: `{' '.join(args)}` failed (exit {result.returncode})")
    return result.stdout


def version_key(version):
    parts = [int(p) for p in version.split(".")]
    return tuple(parts + [0] * (3 - len(parts)))


def main():
    manifest = tomllib.loads((ROOT / "Cargo.toml").read_text())
    package = manifest["package"]
    name, version, msrv = package["name"], package["version"], package["rust-version"]
    features = sorted(f for f in manifest.get("features", {}) if f != "default")
    unknown = set(FEATURE_MSRV) - set(features)
    if unknown:
        sys.exit(f"msrv: FEATURE_MSRV names features that do not exist: {sorted(unknown)}")

    meta = json.loads(run(["cargo", "metadata", "--no-deps", "--format-version", "1"], ROOT))
    work = Path(meta["target_directory"]) / "msrv"
    env = dict(os.environ, CARGO_TARGET_DIR=str(work / "target"))

    # 1. The published manifest, without dev-dependencies, in a package of its own.
    # (--allow-dirty: only the manifest and sources are used here; the publish dry-run
    # step is the one that checks the tree is committed.)
    run(["cargo", "package", "--no-verify", "--allow-dirty", "--exclude-lockfile"], ROOT)
    crate = Path(meta["target_directory"]) / "package" / f"{name}-{version}.crate"
    src = work / f"{name}-{version}"
    shutil.rmtree(src, ignore_errors=True)
    with tarfile.open(crate) as tar:
        tar.extractall(work, filter="data")
    kept, skipping = [], False
    for line in (src / "Cargo.toml").read_text().splitlines(keepends=True):
        if line.startswith("["):
            skipping = line.startswith("[dev-dependencies")
        if not skipping:
            kept.append(line)
    kept.append("\n[workspace]\n")  # not a member of the repository's package
    (src / "Cargo.toml").write_text("".join(kept))

    # 2. The lockfile a user on the MSRV gets.
    resolve_env = dict(env, CARGO_RESOLVER_INCOMPATIBLE_RUST_VERSIONS="fallback")
    run(["cargo", "generate-lockfile", "--quiet"], src, resolve_env)

    # 3. The rust-version each resolved dependency declares, per feature set.
    meta = json.loads(run(
        ["cargo", "metadata", "--format-version", "1", "--locked", "--all-features"], src, env))
    declared = {(p["name"], p["version"]): p.get("rust_version") for p in meta["packages"]}
    failures = []
    for feature in [None] + features:
        limit = FEATURE_MSRV.get(feature, msrv) if feature else msrv
        args = ["cargo", "tree", "--locked", "--edges", "no-dev", "--target", "all",
                "--no-default-features", "--prefix", "none", "--format", "{p}"]
        if feature:
            args += ["--features", feature]
        deps = set()
        for line in run(args, src, env).splitlines():
            dep_name, dep_version = line.split()[:2]
            if dep_name != name:
                deps.add((dep_name, dep_version.removeprefix("v")))
        too_new = sorted(
            (d for d in deps if declared[d] and version_key(declared[d]) > version_key(limit)),
            key=lambda d: version_key(declared[d]), reverse=True)
        top = max((d for d in deps if declared[d]), key=lambda d: version_key(declared[d]))
        label = feature or "(no features)"
        print(f"{label}: MSRV {limit}; {len(deps)} dependencies, the highest declared "
              f"rust-version is {declared[top]} ({top[0]} {top[1]})")
        for dep in too_new:
            failures.append(f"{label}: {dep[0]} {dep[1]} declares rust-version "
                            f"{declared[dep]} > {limit}")

    if failures:
        print("\n".join(failures), file=sys.stderr)

    # 4. The crate against those versions, with the MSRV lint denied.
    run(["cargo", "clippy", "--quiet", "--locked", "--lib", "--all-features", "--",
         "-D", "clippy::incompatible_msrv"], src, env, capture=False)

    if failures:
        sys.exit("msrv: dependencies above the MSRV (raise FEATURE_MSRV for that "
                 "feature, and the README's MSRV section, or pin the dependency)")
    print(f"msrv: ok (rust-version {msrv})")


if __name__ == "__main__":
    main()

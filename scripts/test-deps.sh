#!/usr/bin/env bash
# System packages the tests need beyond Python's: Chromium and its WebDriver (the Neo4j Browser
# test drives a real headless Chromium). Installed with apt-get when missing and allowed (root),
# else this fails with the exact command to run. Java and Maven (for the Neo4j jars) likewise.
set -euo pipefail
missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v chromedriver >/dev/null 2>&1 || missing+=(chromium-driver)
command -v java >/dev/null 2>&1 || missing+=(openjdk-17-jre-headless)
command -v mvn >/dev/null 2>&1 || missing+=(maven)
[ ${#missing[@]} -eq 0 ] && exit 0
cmd="apt-get install -y ${missing[*]}"
if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing ${missing[*]} for the tests (apt-get) ..."
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >/dev/null && apt-get install -y -q "${missing[@]}" >/dev/null
else
    echo "The tests need ${missing[*]}: run  sudo apt-get update && sudo $cmd" >&2
    exit 1
fi

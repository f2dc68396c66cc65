#!/bin/sh
# Create the secrets docker/compose.yaml mounts, once: docker/secrets/ (or the folder
# given) gets db_password, cipher.key (the KEK: base64 of 32 bytes) and signing.key (the
# Ed25519 tree-head key: 64 hex digits). An existing file is never replaced: a new
# cipher.key would leave every identity unreadable, a new signing.key would sign heads
# auditors do not know.
#
# The folder is 0700, so only you reach it on the host; the files are 0444 because
# compose bind-mounts them as they are and the container's user (uid 10001) must read
# them. Keep copies of cipher.key and signing.key somewhere safe, apart from the
# database backups (README, "Backup and restore").
set -eu
umask 077
dir=${1:-$(dirname "$0")/secrets}
mkdir -p "$dir"
chmod 0700 "$dir"

random_bytes() { head -c 32 /dev/urandom; }

make_secret() {  # NAME GENERATOR
  if [ -s "$dir/$1" ]; then
    echo "kept    $dir/$1"
    return
  fi
  "$2" > "$dir/$1.new"
  chmod 0444 "$dir/$1.new"
  mv "$dir/$1.new" "$dir/$1"
  echo "created $dir/$1"
}

db_password() { random_bytes | od -An -tx1 | tr -d ' \n'; echo; }
cipher_key() { random_bytes | base64 | tr -d '\n'; echo; }
signing_key() { random_bytes | od -An -tx1 | tr -d ' \n'; echo; }

make_secret db_password db_password
make_secret cipher.key cipher_key
make_secret signing.key signing_key

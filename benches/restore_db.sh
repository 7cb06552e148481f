#!/bin/bash
# restore-db of night 7 of the shared dataset into containers, beside the manual steps that do
# the same without keeping the replaced data. Needs Docker, redis-server/redis-cli, GNU time.
#
#   bash benches/restore_db.sh /tmp/rpger-data/2025-03-07_03-03-45 [RUNS]
#
# Images are built here FROM scratch with host binaries (no registry): redis-server; a shell
# loop that exits on SIGTERM (Chroma stand-in); stand-in mongodump (`cat` of an archive) and
# mongorestore (`cat > /dev/null`) — there is no mongod here, so the MongoDB row measures
# rpger-store's part (export, keep-dump, feed) and not MongoDB's.
set -euo pipefail
NIGHT=${1:?usage: restore_db.sh NIGHT_DIR [RUNS]}
RUNS=${2:-3}
B=${B:-$(cd "$(dirname "$0")/.." && pwd)/target/release/rpger-store}
W=$(mktemp -d /tmp/rpger-restore-db-bench.XXXXXX)
trap 'docker rm -f rdb-bench-redis rdb-bench-chroma rdb-bench-mongo >/dev/null 2>&1; rm -rf "$W"' EXIT

image() { # TAG ENTRYPOINT BINARY... ; scripts under $W/scripts are copied to /usr/bin
  local tag=$1 entry=$2 ctx=$W/img-$1; shift 2
  mkdir -p "$ctx/rootfs/tmp" "$ctx/rootfs/data" "$ctx/rootfs/usr/bin"
  for b in "$@"; do
    mkdir -p "$ctx/rootfs$(dirname "$b")"; cp "$b" "$ctx/rootfs$b"
    for l in $(ldd "$b" | grep -o '/[^ ]*'); do mkdir -p "$ctx/rootfs$(dirname "$l")"; cp -L "$l" "$ctx/rootfs$l"; done
  done
  [ -d "$W/scripts-$tag" ] && cp "$W/scripts-$tag"/* "$ctx/rootfs/usr/bin/"
  printf 'FROM scratch\nCOPY rootfs/ /\nENTRYPOINT %s\n' "$entry" > "$ctx/Dockerfile"
  docker build -q -t "rdb-bench-$tag:1" "$ctx" >/dev/null 2>&1
}
secs() { echo "$(date +%s.%N)"; }
since() { echo "$(echo "$(date +%s.%N) - $1" | bc)"; }

image redis '["/usr/bin/redis-server", "--dir", "/data", "--protected-mode", "no", "--appendonly", "yes", "--save", ""]' /usr/bin/redis-server
image loop '["/bin/sh", "-c", "trap \"exit 0\" TERM; while :; do sleep 0.1; done"]' /bin/sh /bin/sleep /bin/cat
mkdir -p "$W/scripts-mongo"
printf '#!/bin/sh\ncat /data/current.archive\n' > "$W/scripts-mongo/mongodump"
printf '#!/bin/sh\nexec cat > /dev/null\n' > "$W/scripts-mongo/mongorestore"
chmod 755 "$W/scripts-mongo"/*
image mongo '["/bin/sh", "-c", "trap \"exit 0\" TERM; while :; do sleep 0.1; done"]' /bin/sh /bin/sleep /bin/cat

echo "## Redis ($(du -sh "$NIGHT/redis" | cut -f1)): restore-db vs restore + docker stop / docker cp / docker start"
cp -a "$NIGHT/redis" "$W/redis-data"
docker run -d --name rdb-bench-redis -v "$W/redis-data:/data" rdb-bench-redis:1 >/dev/null
ip() { docker inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}' rdb-bench-redis; }
up() { until [ "$(redis-cli -h "$(ip)" PING 2>/dev/null)" = PONG ]; do sleep 0.1; done; }
up
"$B" init --store "$W/store" >/dev/null
"$B" --store "$W/store" backup --source redis=docker-redis:rdb-bench-redis >/dev/null
for i in $(seq "$RUNS"); do
  redis-cli -h "$(ip)" FLUSHALL >/dev/null; rm -rf "$W/keep"
  /usr/bin/time -f "restore-db redis: %e s, peak RSS %M KB" "$B" --store "$W/store" restore-db --yes \
    --source redis=docker-redis:rdb-bench-redis --keep-dir "$W/keep" --log-dir "$W/logs" --scratch-dir "$W" >/dev/null
  redis-cli -h "$(ip)" FLUSHALL >/dev/null; rm -rf "$W/plain"
  s=$(secs); "$B" --store "$W/store" restore latest "$W/plain" --only redis >/dev/null
  docker stop rdb-bench-redis >/dev/null; docker cp "$W/plain/redis/." rdb-bench-redis:/data; docker start rdb-bench-redis >/dev/null; up
  echo "manual (restore, stop, docker cp, start, loaded): $(since "$s") s; keys $(redis-cli -h "$(ip)" DBSIZE)"
done
docker rm -f rdb-bench-redis >/dev/null

echo "## Chroma ($(du -sh "$NIGHT/chroma" | cut -f1)): restore-db vs restore + stop / two mv / start"
mkdir -p "$W/rpger"; cp -a "$NIGHT/chroma" "$W/rpger/chroma"
docker run -d --name rdb-bench-chroma -v "$W/rpger/chroma:/chroma" rdb-bench-loop:1 >/dev/null
"$B" --store "$W/store" backup --source chroma=docker-paused:rdb-bench-chroma:"$W/rpger/chroma" >/dev/null
for i in $(seq "$RUNS"); do
  echo changed > "$W/rpger/chroma/chroma.sqlite3"
  /usr/bin/time -f "restore-db chroma: %e s, peak RSS %M KB" "$B" --store "$W/store" restore-db --yes \
    --source chroma=docker-paused:rdb-bench-chroma:"$W/rpger/chroma" --log-dir "$W/logs" >/dev/null
  cmp -s "$W/rpger/chroma/chroma.sqlite3" "$NIGHT/chroma/chroma.sqlite3" || echo "MISMATCH after restore-db"
  rm -rf "$W/rpger"/chroma.before-restore-* "$W/plain"
  s=$(secs); "$B" --store "$W/store" restore latest "$W/plain" --only chroma >/dev/null
  docker stop rdb-bench-chroma >/dev/null; mv "$W/rpger/chroma" "$W/old"; mv "$W/plain/chroma" "$W/rpger/chroma"; docker start rdb-bench-chroma >/dev/null
  echo "manual (restore, stop, swap, start): $(since "$s") s"; rm -rf "$W/old"
done
docker rm -f rdb-bench-chroma >/dev/null

echo "## MongoDB (stand-ins): restore-db vs mongodb-archive + docker exec mongodump > file + docker exec -i mongorestore < file"
mkdir -p "$W/mdata"
"$B" --store "$W/store" backup --source mongodb="$NIGHT/mongodb" >/dev/null
"$B" --store "$W/store" mongodb-archive latest -o "$W/mdata/current.archive" 2>/dev/null
echo "archive: $(du -sh "$W/mdata/current.archive" | cut -f1)"
docker run -d --name rdb-bench-mongo -v "$W/mdata:/data" rdb-bench-mongo:1 >/dev/null
for i in $(seq "$RUNS"); do
  rm -rf "$W/keep"
  /usr/bin/time -f "restore-db mongodb: %e s, peak RSS %M KB" "$B" --store "$W/store" restore-db --yes \
    --source mongodb=docker-mongodump:rdb-bench-mongo --keep-dir "$W/keep" --log-dir "$W/logs" --scratch-dir "$W" >/dev/null
  s=$(secs)
  "$B" --store "$W/store" mongodb-archive latest -o "$W/x.archive" 2>/dev/null
  docker exec rdb-bench-mongo mongodump > "$W/y.archive"
  docker exec -i rdb-bench-mongo mongorestore < "$W/x.archive"
  echo "manual (export, keep-dump, feed): $(since "$s") s"; rm -f "$W/x.archive" "$W/y.archive"
done

# A bitcoind image for tests and the generated test federation: Bitcoin Knots
# installed from Debian's package archive by deploy/bitcoind.sh (bookworm has
# no bitcoind package). Production members may use any bitcoind 25.0+ image
# instead (BITCOIND_IMAGE in the member's .env): the compose file runs
# `bitcoind` and `bitcoin-cli` from PATH.
#
#   docker build -f deploy/docker/bitcoind.Dockerfile -t fedpeg.invalid/bitcoind:knots deploy
ARG BASE_IMAGE=debian:bookworm-slim
FROM ${BASE_IMAGE}
COPY bitcoind.sh /usr/local/lib/fedpeg/bitcoind.sh
RUN mkdir -p /opt/fedpeg \
 && apt-get update -qq \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends util-linux >/dev/null \
 && FEDPEG_CACHE=/opt/fedpeg /usr/local/lib/fedpeg/bitcoind.sh > /opt/fedpeg/bitcoind.env \
 && . /opt/fedpeg/bitcoind.env \
 && ln -s "$BITCOIND" /usr/local/bin/bitcoind \
 && ln -s "$BITCOIN_CLI" /usr/local/bin/bitcoin-cli \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10002 bitcoin \
 && useradd --system --uid 10002 --gid bitcoin --home-dir /data --no-create-home --shell /usr/sbin/nologin bitcoin \
 && install -d -o bitcoin -g bitcoin -m 0700 /data \
 && bitcoind -version | head -1
USER 10002:10002
VOLUME ["/data"]
EXPOSE 8332 8333 18443 18444
ENTRYPOINT ["bitcoind"]
CMD ["-datadir=/data", "-printtoconsole"]

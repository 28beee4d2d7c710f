# Prometheus from Debian's package, for the member stacks where no registry
# is reachable. With a registry, PROMETHEUS_IMAGE=prom/prometheus works the
# same: the compose file passes the binary's flags explicitly.
#
#   docker build -f deploy/docker/prometheus.Dockerfile -t fedpeg.invalid/prometheus:debian deploy/docker
ARG BASE_IMAGE=debian:bookworm-slim
FROM ${BASE_IMAGE}
RUN apt-get update -qq \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null \
 && rm -rf /var/lib/apt/lists/* \
 && install -d -o prometheus -g prometheus /prometheus
USER prometheus
VOLUME ["/prometheus"]
EXPOSE 9090
# /bin/prometheus, as in the prom/prometheus image (/bin is /usr/bin here).
ENTRYPOINT ["/bin/prometheus"]
CMD ["--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus"]

#!/usr/bin/env bash
# What `make demo` prints at the end: where to look.
set -uo pipefail
http_port="${GREENFLOW_LAB_HTTP_PORT:-8080}"
https_port="${GREENFLOW_LAB_HTTPS_PORT:-8443}"
lb="${GREENFLOW_LAB_PREFIX:-}lb-1"
cat <<MSG

The lab is up. Where to look:
  load balancer      https://127.0.0.1:${https_port}/   (self-signed certificate: curl -k)
                     http://127.0.0.1:${http_port}/     (redirects to https)
  the live release   curl -k https://127.0.0.1:${https_port}/version
  roll back          . .venv/bin/activate && ansible-playbook playbooks/rollback.yml   (seconds; docs/rollback.md)
  release history    ansible-playbook playbooks/history.yml
  release again      ansible-playbook playbooks/deploy.yml -e release_version=<version>   (docs/deploy.md)
  lab hosts          make lab-status
  a shell on a host  docker exec -it $lb bash
  Ansible            . .venv/bin/activate && ansible all -m ping
  tear down          make lab-down
MSG
if ! docker exec "$lb" test -x /usr/sbin/nginx 2>/dev/null; then
  echo "  (nginx is not provisioned on $lb yet: the load balancer URLs answer once site.yml installs it)"
fi

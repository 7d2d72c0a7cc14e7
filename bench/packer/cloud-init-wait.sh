#!/bin/sh
# First provisioner of every Packer stage: wait for cloud-init to finish, as strata does
# (`cloud-init status --wait`) before its first step. Errors are reported, not fatal, like
# strata's warning.
cloud-init status --wait >/dev/null || echo "cloud-init-wait: cloud-init ended with errors: $(cloud-init status 2>&1)" >&2
exit 0

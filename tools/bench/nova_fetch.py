#!/usr/bin/python3
"""nova's own cold fetch, for tools/bench/figures.sh: the seconds
nova.virt.images.fetch_to_raw (Debian's python3-nova) takes to turn a
Glance image into a raw file, timed inside the process (nova's imports,
about a second, are not counted).

usage: nova_fetch.py GLANCE_URL IMAGE_ID TARGET_FILE
"""
import sys
import time

import nova.conf
import nova.context
import nova.privsep
from nova.virt import images


def main(glance_url, image_id, target):
    conf = nova.conf.CONF
    conf([], project="nova", default_config_files=[])
    conf.set_override("api_servers", [glance_url], group="glance")
    # As root: nova's privileged helpers run in this process (no privsep daemon).
    nova.privsep.sys_admin_pctxt.set_client_mode(False)
    context = nova.context.RequestContext(user_id="kiln-bench", project_id="kiln-bench",
                                          auth_token="unused", is_admin=True)
    start = time.monotonic()
    images.fetch_to_raw(context, image_id, target, trusted_certs=None)
    print(f"{time.monotonic() - start:.3f}")


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    main(*sys.argv[1:])

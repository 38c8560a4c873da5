#!/usr/bin/python3
"""Makes, with nova's own code (Debian's python3-nova), what nova-compute's
libvirt driver leaves on disk for an image-backed instance: the raw base
_base/<sha1(image id)> fetched from Glance by nova.virt.images.fetch_to_raw,
and the instance directory <uuid>/ with nova's qcow2 overlay `disk` and its
disk.info, made by nova.virt.libvirt.imagebackend.Qcow2 under nova's own
lock (locks/nova-<name>). Tests use it to put nova on the same instances
path as kiln.

usage: nova_made.py INSTANCES_PATH GLANCE_URL IMAGE_ID INSTANCE_UUID [ROOT_GB]
"""
import sys
import types

import nova.conf
import nova.context
import nova.privsep
from nova.virt.libvirt import imagebackend, imagecache
from nova.virt.libvirt import utils as libvirt_utils


def main(instances_path, glance_url, image_id, uuid, root_gb="1"):
    conf = nova.conf.CONF
    conf([], project="nova", default_config_files=[])
    conf.set_override("instances_path", instances_path)
    conf.set_override("api_servers", [glance_url], group="glance")
    conf.set_override("lock_path", instances_path + "/locks", group="oslo_concurrency")
    # The test runs as root: nova's privileged helpers run in this process
    # instead of through a privsep daemon started with sudo.
    nova.privsep.sys_admin_pctxt.set_client_mode(False)
    # Glance here runs without Keystone and ignores the token.
    context = nova.context.RequestContext(user_id="kiln-test", project_id="kiln-test",
                                          auth_token="unused", is_admin=True)
    instance = types.SimpleNamespace(uuid=uuid, name="instance-" + uuid[:8])
    disk = imagebackend.Backend(use_cow=True).by_name(instance, "disk")
    disk.cache(fetch_func=libvirt_utils.fetch_image, context=context,
               filename=imagecache.get_cache_fname(image_id), size=int(root_gb) * 1024**3,
               image_id=image_id, trusted_certs=None)
    print(disk.path)


if __name__ == "__main__":
    if len(sys.argv) not in (5, 6):
        sys.exit(__doc__)
    main(*sys.argv[1:])

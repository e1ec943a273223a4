"""Bring-up: the node plan shared by ``ros2 launch`` and ``so101 up`` (``plan``), the child
process group (``processes``), the ``so101`` command (``cli``) and the demo (``demo``)."""

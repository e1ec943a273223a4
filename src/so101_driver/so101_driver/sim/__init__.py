"""MuJoCo simulation of the cell: physics (``cell``), cameras (``renderer``), the scripted
expert (``expert``), and their nodes. The MJCF lives in the package share (``mjcf/``) beside
the meshes it shares with the URDF."""

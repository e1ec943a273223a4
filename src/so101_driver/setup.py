from pathlib import Path

from setuptools import find_packages, setup

package_name = 'so101_driver'
here = Path(__file__).parent


def share(folder):
    """(install dir, files) pairs for every file under ``folder``, sub-folders kept."""
    by_dir = {}
    for p in sorted((here / folder).rglob('*')):
        if p.is_file():
            rel = p.relative_to(here)
            by_dir.setdefault(f'share/{package_name}/{rel.parent}', []).append(str(rel))
    return list(by_dir.items())


setup(
    name=package_name,
    version='0.1.0',
    packages=find_packages(exclude=['test']),
    data_files=[
        ('share/ament_index/resource_index/packages', [f'resource/{package_name}']),
        (f'share/{package_name}', ['package.xml']),
        *share('urdf'),
        *share('meshes'),
        *share('mjcf'),
        *share('launch'),
        *share('config'),
    ],
    install_requires=['setuptools', 'numpy', 'pyserial', 'pyyaml', 'feetech-servo-sdk',
                      'opencv-python-headless', 'mujoco'],
    extras_require={'test': ['pytest']},
    zip_safe=True,
    maintainer='SO-101 Pi0.5 suite maintainers',
    maintainer_email='maintainers@so101-pi05.dev',
    description='SO-101 arm on a Feetech STS3215 bus, with a bus emulator.',
    license='Apache-2.0',
    entry_points={
        'console_scripts': [
            'so101_arm = so101_driver.arm.arm_node:main',
            'so101-servo-emulator = so101_driver.feetech.emulator.cli:main',
            'so101-driver-demo = so101_driver.arm.driver_demo:main',
            'so101_camera = so101_driver.cameras.camera_node:main',
            'so101_sim = so101_driver.sim.sim_node:main',
            'so101_sim_expert = so101_driver.sim.expert_node:main',
            'so101_leader = so101_driver.teleop.leader_node:main',
            'so101 = so101_driver.bringup.cli:main',
        ],
    },
)

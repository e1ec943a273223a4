from pathlib import Path

from setuptools import find_packages, setup

package_name = 'so101_driver'
here = Path(__file__).parent


def share(folder):
    """(install dir, files) for every file under ``folder``, kept relative to the package."""
    files = sorted(str(p.relative_to(here)) for p in (here / folder).glob('*') if p.is_file())
    return (f'share/{package_name}/{folder}', files)


setup(
    name=package_name,
    version='0.1.0',
    packages=find_packages(exclude=['test']),
    data_files=[
        ('share/ament_index/resource_index/packages', [f'resource/{package_name}']),
        (f'share/{package_name}', ['package.xml']),
        share('urdf'),
        share('meshes'),
        share('config'),
    ],
    install_requires=['setuptools', 'numpy', 'pyserial', 'pyyaml', 'feetech-servo-sdk'],
    extras_require={'test': ['pytest']},
    zip_safe=True,
    maintainer='SO-101 Pi0.5 suite maintainers',
    maintainer_email='maintainers@so101-pi05.dev',
    description='SO-101 arm on a Feetech STS3215 bus, with a bus emulator.',
    license='Apache-2.0',
    entry_points={
        'console_scripts': [
            'so101_arm = so101_driver.arm_node:main',
            'so101-servo-emulator = so101_driver.emulator:main',
            'so101-driver-demo = so101_driver.demo:main',
        ],
    },
)

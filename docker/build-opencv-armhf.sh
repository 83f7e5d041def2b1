#!/bin/sh
# Cross-compile a minimal OpenCV for arm/v7 (armhf): modules core, imgproc, imgcodecs (JPEG and
# PNG from OpenCV's bundled, statically linked libjpeg-turbo/libpng/zlib) and the Python 3.11
# bindings, linked statically into one cv2 extension module (~10 MB) that needs only libc,
# libm and libstdc++ at run time. Debian's python3-opencv would drag in VTK, GDAL, FFmpeg,
# GStreamer and X (about 1 GB on armhf).
# Runs on the build machine (amd64 or arm64, Debian bookworm) with Debian's armhf cross compiler;
# the source is the opencv-python-headless sdist from PyPI (the version the other arches use).
#   usage: build-opencv-armhf.sh fetch OPENCV_PYTHON_VERSION   (tools, headers and source)
#          build-opencv-armhf.sh build OPENCV_PYTHON_VERSION OUT_DIR
set -eu
phase=$1
version=$2
export DEBIAN_FRONTEND=noninteractive
pip_cert=${PIP_CERT:+--cert $PIP_CERT}

if [ "$phase" = fetch ]; then

apt-get update
apt-get install -y --no-install-recommends g++-arm-linux-gnueabihf cmake make python3 python3-venv xz-utils
# Python 3.11 and numpy headers for armhf, from the same Debian packages the image runs.
dpkg --add-architecture armhf
# Only packages from bookworm main are downloaded below: a stale armhf index elsewhere (seen on
# mirrors behind caches) must not stop the build; a missing package still fails the download.
apt-get update || echo "warning: some armhf package indexes failed to update; continuing" >&2
mkdir -p /tmp/debs /sysroot
(cd /tmp/debs && apt-get download libpython3.11-dev:armhf libpython3.11:armhf python3-numpy:armhf)
for deb in /tmp/debs/*.deb; do dpkg -x "$deb" /sysroot; done

# The sdist, fetched by pip (scikit-build is there only so pip can read the sdist's metadata).
/usr/bin/python3 -m venv /tmp/dl
# shellcheck disable=SC2086
/tmp/dl/bin/pip install --no-cache-dir --quiet $pip_cert scikit-build==0.18.1 setuptools wheel
# shellcheck disable=SC2086
/tmp/dl/bin/pip download --no-cache-dir --no-deps --no-binary :all: --no-build-isolation $pip_cert \
	-d /tmp/src "opencv-python-headless==$version"
tar -C /tmp/src -xzf /tmp/src/opencv-python-headless-"$version".tar.gz
rm -rf /tmp/dl /tmp/src/*.tar.gz /tmp/debs /var/lib/apt/lists/*
exit 0
fi

out=$3
src=/tmp/src/opencv-python-headless-$version/opencv

numpy_inc=$(echo /sysroot/usr/lib/python3/dist-packages/numpy/core/include)
mkdir -p /tmp/build
cd /tmp/build
cmake "$src" -DCMAKE_BUILD_TYPE=Release \
	-DCMAKE_TOOLCHAIN_FILE="$src/platforms/linux/arm-gnueabi.toolchain.cmake" \
	-DGNU_MACHINE=arm-linux-gnueabi -DGCC_COMPILER_VERSION= \
	-DCPU_BASELINE=NEON -DCPU_DISPATCH= -DENABLE_NEON=ON \
	-DBUILD_LIST=core,imgproc,imgcodecs,python3 \
	-DBUILD_SHARED_LIBS=OFF -DOPENCV_SKIP_PYTHON_LOADER=ON \
	-DBUILD_JPEG=ON -DBUILD_PNG=ON -DBUILD_ZLIB=ON \
	-DWITH_JPEG=ON -DWITH_PNG=ON -DWITH_TIFF=OFF -DWITH_WEBP=OFF -DWITH_OPENJPEG=OFF -DWITH_JASPER=OFF \
	-DWITH_OPENEXR=OFF -DWITH_IMGCODEC_HDR=OFF -DWITH_IMGCODEC_SUNRASTER=OFF -DWITH_IMGCODEC_PXM=OFF \
	-DWITH_IMGCODEC_PFM=OFF -DWITH_AVIF=OFF -DWITH_SPNG=OFF -DWITH_GDAL=OFF -DWITH_GDCM=OFF \
	-DWITH_FFMPEG=OFF -DWITH_GSTREAMER=OFF -DWITH_V4L=OFF -DWITH_GTK=OFF -DWITH_QT=OFF -DWITH_OPENGL=OFF \
	-DWITH_OPENCL=OFF -DWITH_IPP=OFF -DWITH_TBB=OFF -DWITH_EIGEN=OFF -DWITH_LAPACK=OFF -DWITH_ITT=OFF \
	-DWITH_PROTOBUF=OFF -DWITH_ADE=OFF -DWITH_VA=OFF -DWITH_1394=OFF -DWITH_CAROTENE=ON \
	-DBUILD_TESTS=OFF -DBUILD_PERF_TESTS=OFF -DBUILD_EXAMPLES=OFF -DBUILD_DOCS=OFF -DBUILD_opencv_apps=OFF \
	-DBUILD_JAVA=OFF -DBUILD_opencv_python2=OFF -DINSTALL_PYTHON_EXAMPLES=OFF -DOPENCV_GENERATE_PKGCONFIG=OFF \
	-DPYTHON3_EXECUTABLE=/usr/bin/python3 \
	-DPYTHON3_INCLUDE_PATH=/sysroot/usr/include/python3.11 -DPYTHON3_INCLUDE_DIR=/sysroot/usr/include/python3.11 \
	-DPYTHON3_LIBRARY=/sysroot/usr/lib/arm-linux-gnueabihf/libpython3.11.so \
	-DPYTHON3_LIBRARIES=/sysroot/usr/lib/arm-linux-gnueabihf/libpython3.11.so \
	-DPYTHON3_NUMPY_INCLUDE_DIRS="$numpy_inc" \
	-DPYTHON3_PACKAGES_PATH=/tmp/install/python \
	-DCMAKE_CXX_FLAGS="-isystem /sysroot/usr/include" -DCMAKE_C_FLAGS="-isystem /sysroot/usr/include" \
	-DCMAKE_INSTALL_PREFIX=/tmp/install
make -j"$(nproc)" opencv_python3
mkdir -p "$out"
find /tmp/build/lib -name 'cv2*.so' -exec arm-linux-gnueabihf-strip --strip-unneeded -o "$out/cv2.cpython-311-arm-linux-gnueabihf.so" {} \;
cp "$src/LICENSE" "$out/OPENCV-LICENSE"
ls -l "$out"

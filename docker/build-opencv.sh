#!/bin/bash
# Compile a minimal OpenCV for one target arch on the build machine (natively for its own arch, with
# Debian's cross compiler for the others): modules core, imgproc, imgcodecs (JPEG and PNG from
# OpenCV's bundled, statically linked libjpeg-turbo/libpng/zlib) and the Python 3.11 bindings, linked
# statically into one stripped cv2 extension module (~5-7 MB) that needs only libc, libm and
# libstdc++ at run time. opencv-python-headless's wheel is 137 MB installed on amd64 (every module,
# FFmpeg, a second OpenBLAS, Haar cascades); Debian's python3-opencv drags in VTK, GDAL, FFmpeg,
# GStreamer and X. The source is the opencv-python-headless sdist from PyPI.
# Runs on a Debian bookworm build machine (amd64 or arm64).
#   usage: build-opencv.sh fetch OPENCV_PYTHON_VERSION TARGETARCH   (compiler, headers, source)
#          build-opencv.sh build OPENCV_PYTHON_VERSION TARGETARCH OUT_DIR
# TARGETARCH as buildah/buildx set it: amd64, arm64 or arm (arm/v7). OUT_DIR gets
# site-packages/cv2.cpython-311-<triplet>.so and licenses/LICENSE.
set -euo pipefail
phase=$1
version=$2
case $3 in
amd64) debarch=amd64 triplet=x86_64-linux-gnu cpu="-DCPU_BASELINE=SSE3" ocv_toolchain= ;;
arm64) debarch=arm64 triplet=aarch64-linux-gnu cpu="-DCPU_BASELINE=NEON" ocv_toolchain=aarch64-gnu ;;
arm) debarch=armhf triplet=arm-linux-gnueabihf cpu="-DCPU_BASELINE=NEON -DENABLE_NEON=ON" ocv_toolchain=arm-gnueabi ;;
*) echo "build-opencv.sh: unknown TARGETARCH '$3'" >&2; exit 2 ;;
esac
# Native when the build machine is the target arch, else Debian's cross compiler for the triplet.
if [ "$(dpkg --print-architecture)" = "$debarch" ]; then cross=; else cross=$triplet-; fi
export DEBIAN_FRONTEND=noninteractive
pip_cert=${PIP_CERT:+--cert $PIP_CERT}

if [ "$phase" = fetch ]; then
	apt-get update
	compiler=g++
	[ -z "$cross" ] || compiler=g++-$(echo "$triplet" | tr _ -)
	apt-get install -y --no-install-recommends "$compiler" cmake make python3 python3-venv xz-utils
	# Python 3.11 and numpy headers for the target arch, from Debian's packages, into /sysroot.
	[ -z "$cross" ] || dpkg --add-architecture "$debarch"
	# Only packages from bookworm main are downloaded below: a stale foreign index (seen on mirrors
	# behind caches) must not stop the build; a missing package still fails the download.
	apt-get update || echo "warning: some $debarch package indexes failed to update; continuing" >&2
	mkdir -p /tmp/debs /sysroot
	(cd /tmp/debs && apt-get download "libpython3.11-dev:$debarch" "libpython3.11:$debarch" "python3-numpy:$debarch")
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

out=$4
src=/tmp/src/opencv-python-headless-$version/opencv
module=cv2.cpython-311-$triplet.so
toolchain=
if [ -n "$cross" ] && [ -n "$ocv_toolchain" ]; then
	# OpenCV's own toolchain files for ARM (GNU_MACHINE without the "hf": the file adds it).
	toolchain="-DCMAKE_TOOLCHAIN_FILE=$src/platforms/linux/$ocv_toolchain.toolchain.cmake -DGNU_MACHINE=${triplet%hf} -DGCC_COMPILER_VERSION="
elif [ -n "$cross" ]; then
	printf 'set(CMAKE_SYSTEM_NAME Linux)\nset(CMAKE_SYSTEM_PROCESSOR %s)\nset(CMAKE_C_COMPILER %sgcc)\nset(CMAKE_CXX_COMPILER %sg++)\n' \
		"${triplet%%-*}" "$cross" "$cross" > /tmp/toolchain.cmake
	toolchain=-DCMAKE_TOOLCHAIN_FILE=/tmp/toolchain.cmake
fi
mkdir -p /tmp/build
cd /tmp/build
# No CPU dispatch (one compile of each kernel, for the baseline only): the servers resize and convert
# one small image per request, where AVX2/dot-product variants make no measurable difference.
# shellcheck disable=SC2086
cmake "$src" -DCMAKE_BUILD_TYPE=Release $toolchain $cpu -DCPU_DISPATCH= \
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
	-DPYTHON3_LIBRARY="/sysroot/usr/lib/$triplet/libpython3.11.so" \
	-DPYTHON3_LIBRARIES="/sysroot/usr/lib/$triplet/libpython3.11.so" \
	-DPYTHON3_NUMPY_INCLUDE_DIRS=/sysroot/usr/lib/python3/dist-packages/numpy/core/include \
	-DPYTHON3_PACKAGES_PATH=/tmp/install/python \
	-DCMAKE_CXX_FLAGS="-isystem /sysroot/usr/include" -DCMAKE_C_FLAGS="-isystem /sysroot/usr/include" \
	-DCMAKE_INSTALL_PREFIX=/tmp/install
make -j"$(nproc)" opencv_python3
mkdir -p "$out/site-packages" "$out/licenses"
find /tmp/build/lib -name 'cv2*.so' -exec "${cross}strip" --strip-unneeded -o "$out/site-packages/$module" {} \;
cp "$src/LICENSE" "$out/licenses/LICENSE"
ls -l "$out/site-packages"

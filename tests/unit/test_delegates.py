"""TFLite external delegates' parameters (edgeservers/runtimes/delegates.py): options in their text forms,
secrets masked, an Edge TPU pool one slot per device listed, other delegates the whole pool."""

from __future__ import annotations

import pytest

from edgeservers.errors import ModelLoadError
from edgeservers.runtimes.delegates import DelegateConfig, parse_options, shown
from edgeservers.runtimes.tflite import TFLiteOptions, TFLiteRuntime


@pytest.mark.parametrize(
    "delegate_options, slots",
    [("device=usb:0,usb:1,pci:0", 3), ("device=usb", 1), ("", 1)],
)
def test_edge_tpu_slots_follow_the_devices_listed(delegate_options, slots):
    options = TFLiteOptions(
        num_threads=4, pool_size=8, delegate="/lib/libedgetpu.so.1", delegate_options=delegate_options
    )
    assert len(TFLiteRuntime.slot_threads(options, cpus=4)) == slots


def test_other_delegates_get_the_whole_pool():
    options = TFLiteOptions(
        num_threads=4, pool_size=3, delegate="libarmnnDelegate.so", delegate_options="backends=CpuAcc"
    )
    assert len(TFLiteRuntime.slot_threads(options, cpus=4)) == 3


def test_options_text_forms():
    assert parse_options("") == {}
    assert parse_options(" device=usb:0,usb:1 ; backends = CpuAcc,CpuRef ;") == {
        "device": "usb:0,usb:1",
        "backends": "CpuAcc,CpuRef",
    }
    assert parse_options('{"a": 1, "b": false, "c": "x=y;z"}') == {"a": "1", "b": "false", "c": "x=y;z"}
    with pytest.raises(ModelLoadError, match="is not key=value"):
        parse_options("=value")


def test_secret_looking_options_are_masked():
    options = {"device": "usb:0", "api_key": "k", "Password": "p", "auth-token": "t", "secret": "s"}
    assert shown(options) == "device=usb:0;api_key=***;Password=***;auth-token=***;secret=***"


def test_only_an_edge_tpu_library_splits_its_devices():
    edgetpu = DelegateConfig.from_parameters("/usr/lib/libedgetpu.so.1", "device=usb:0,usb:1;x=1", "fail")
    assert edgetpu is not None and edgetpu.slot_options(2) == [
        {"device": "usb:0", "x": "1"},
        {"device": "usb:1", "x": "1"},
    ]
    other = DelegateConfig.from_parameters("libvx_delegate.so", "device=a,b", "fail")
    assert other is not None and other.max_slots() is None and other.slot_options(2) == [{"device": "a,b"}] * 2
    assert DelegateConfig.from_parameters("", "", "fail") is None

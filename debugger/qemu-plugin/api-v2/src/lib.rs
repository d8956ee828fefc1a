//! lockscope's QEMU plugin for QEMU 9 and later (plugin API version 2 and up). The logic is in `lockscope-qemu-plugin`.
lockscope_qemu_plugin::export_plugin!(2);

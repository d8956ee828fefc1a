//! lockscope's QEMU plugin for QEMU 6.2 to 8.x (plugin API version 1). The logic is in `lockscope-qemu-plugin`.
lockscope_qemu_plugin::export_plugin!(1);

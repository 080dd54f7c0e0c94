"""The station's OS image: build (``python -m image.build``), boot test under QEMU
(``python -m image.qemu``) and flashing (``python -m image.flash``). See
docs/technician.md and the image section of STACK.md."""

// virtio-mmio registers and the virtqueue structures (virtio spec 1.1, sections 2.6 and 4.2).
// Two register interfaces: legacy (version 1, QEMU's default for virtio-mmio) and modern
// (version 2, QEMU with -global virtio-mmio.force-legacy=false). config.h picks one.

#define VIRTIO_MMIO_MAGIC_VALUE 0x000         // "virt"
#define VIRTIO_MMIO_VERSION 0x004             // 1 legacy, 2 modern
#define VIRTIO_MMIO_DEVICE_ID 0x008           // 2 is a block device
#define VIRTIO_MMIO_VENDOR_ID 0x00c
#define VIRTIO_MMIO_DEVICE_FEATURES 0x010
#define VIRTIO_MMIO_DEVICE_FEATURES_SEL 0x014
#define VIRTIO_MMIO_DRIVER_FEATURES 0x020
#define VIRTIO_MMIO_DRIVER_FEATURES_SEL 0x024
#define VIRTIO_MMIO_GUEST_PAGE_SIZE 0x028     // legacy
#define VIRTIO_MMIO_QUEUE_SEL 0x030
#define VIRTIO_MMIO_QUEUE_NUM_MAX 0x034
#define VIRTIO_MMIO_QUEUE_NUM 0x038
#define VIRTIO_MMIO_QUEUE_ALIGN 0x03c         // legacy
#define VIRTIO_MMIO_QUEUE_PFN 0x040           // legacy
#define VIRTIO_MMIO_QUEUE_READY 0x044         // modern
#define VIRTIO_MMIO_QUEUE_NOTIFY 0x050
#define VIRTIO_MMIO_INTERRUPT_STATUS 0x060
#define VIRTIO_MMIO_INTERRUPT_ACK 0x064
#define VIRTIO_MMIO_STATUS 0x070
#define VIRTIO_MMIO_QUEUE_DESC_LOW 0x080      // modern, from here on
#define VIRTIO_MMIO_QUEUE_DESC_HIGH 0x084
#define VIRTIO_MMIO_QUEUE_AVAIL_LOW 0x090
#define VIRTIO_MMIO_QUEUE_AVAIL_HIGH 0x094
#define VIRTIO_MMIO_QUEUE_USED_LOW 0x0a0
#define VIRTIO_MMIO_QUEUE_USED_HIGH 0x0a4

// Device status bits.
#define VIRTIO_STATUS_ACKNOWLEDGE 1
#define VIRTIO_STATUS_DRIVER 2
#define VIRTIO_STATUS_DRIVER_OK 4
#define VIRTIO_STATUS_FEATURES_OK 8

// Feature bits this driver refuses.
#define VIRTIO_BLK_F_RO 5
#define VIRTIO_BLK_F_SCSI 7
#define VIRTIO_BLK_F_CONFIG_WCE 11
#define VIRTIO_BLK_F_MQ 12
#define VIRTIO_F_ANY_LAYOUT 27
#define VIRTIO_RING_F_INDIRECT_DESC 28
#define VIRTIO_RING_F_EVENT_IDX 29
// Feature bit 32, VIRTIO_F_VERSION_1, is bit 0 of the second feature word: modern only.

#define NUM 8  // descriptors in the queue: a request takes three

struct virtq_desc {
  uint64 addr;
  uint32 len;
  uint16 flags;
  uint16 next;
};
#define VRING_DESC_F_NEXT 1   // chained with next
#define VRING_DESC_F_WRITE 2  // the device writes (vs reads) this buffer

struct virtq_avail {
  uint16 flags;
  uint16 idx;        // where the driver puts the next entry
  uint16 ring[NUM];  // heads of descriptor chains
  uint16 unused;
};

struct virtq_used_elem {
  uint32 id;   // head of the finished chain
  uint32 len;
};

struct virtq_used {
  uint16 flags;
  uint16 idx;  // where the device puts the next entry
  struct virtq_used_elem ring[NUM];
};

#define VIRTIO_BLK_T_IN 0   // read the disk
#define VIRTIO_BLK_T_OUT 1  // write the disk

// The first descriptor of every request.
struct virtio_blk_req {
  uint32 type;
  uint32 reserved;
  uint64 sector;
};

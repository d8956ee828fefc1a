// A driver for QEMU's virtio-blk on the virtio-mmio bus, slot 0.
//
// The Makefile builds it for one register interface: VIRTIO=modern (virtio-mmio version 2,
// what QEMU gives with -global virtio-mmio.force-legacy=false) or VIRTIO=legacy (version 1,
// QEMU's default). Requests are interrupt driven: the caller sleeps on its buf until the
// interrupt handler sees the request in the used ring.

#include "types.h"
#include "param.h"
#include "memlayout.h"
#include "riscv.h"
#include "spinlock.h"
#include "sleeplock.h"
#include "buf.h"
#include "virtio.h"
#include "defs.h"

#define R(r) ((volatile uint32 *)(VIRTIO0 + (r)))

// Legacy devices want the whole queue in two physically contiguous pages: descriptors and the
// available ring in the first, the used ring at the start of the second. The modern layout
// may put them anywhere; the same pages serve both.
static __attribute__((aligned(PGSIZE))) char queue_pages[2 * PGSIZE];

static struct disk {
  struct virtq_desc *desc;
  struct virtq_avail *avail;
  struct virtq_used *used;

  char free[NUM];  // which descriptors are free
  uint16 used_idx; // how far this driver has read the used ring

  // Per request, indexed by its first descriptor.
  struct {
    struct buf *b;
    char status;   // written by the device: 0 is success
  } info[NUM];
  struct virtio_blk_req ops[NUM];

  struct spinlock vdisk_lock;
} disk;

void virtio_disk_init(void)
{
  initlock(&disk.vdisk_lock, "virtio_disk");

  if (*R(VIRTIO_MMIO_MAGIC_VALUE) != 0x74726976 || *R(VIRTIO_MMIO_DEVICE_ID) != 2)
    panic("virtio disk: no virtio-blk device at 0x10001000; is fs.img attached?");
  uint32 version = *R(VIRTIO_MMIO_VERSION);
#ifdef VIRTIO_LEGACY
  if (version != 1)
    panic("virtio disk: the device is modern (version 2) but this kernel was built with "
          "VIRTIO=legacy: run QEMU without -global virtio-mmio.force-legacy=false");
#else
  if (version != 2)
    panic("virtio disk: the device is legacy (version 1) but this kernel was built with "
          "VIRTIO=modern: run QEMU with -global virtio-mmio.force-legacy=false");
#endif

  uint32 status = 0;
  *R(VIRTIO_MMIO_STATUS) = status;  // reset
  status |= VIRTIO_STATUS_ACKNOWLEDGE;
  *R(VIRTIO_MMIO_STATUS) = status;
  status |= VIRTIO_STATUS_DRIVER;
  *R(VIRTIO_MMIO_STATUS) = status;

  // Features: none of the optional ones.
  *R(VIRTIO_MMIO_DEVICE_FEATURES_SEL) = 0;
  uint32 features = *R(VIRTIO_MMIO_DEVICE_FEATURES);
  features &= ~((1 << VIRTIO_BLK_F_RO) | (1 << VIRTIO_BLK_F_SCSI) |
                (1 << VIRTIO_BLK_F_CONFIG_WCE) | (1 << VIRTIO_BLK_F_MQ) |
                (1 << VIRTIO_F_ANY_LAYOUT) | (1 << VIRTIO_RING_F_EVENT_IDX) |
                (1 << VIRTIO_RING_F_INDIRECT_DESC));
  *R(VIRTIO_MMIO_DRIVER_FEATURES_SEL) = 0;
  *R(VIRTIO_MMIO_DRIVER_FEATURES) = features;
#ifndef VIRTIO_LEGACY
  *R(VIRTIO_MMIO_DRIVER_FEATURES_SEL) = 1;
  *R(VIRTIO_MMIO_DRIVER_FEATURES) = 1;  // VIRTIO_F_VERSION_1: a modern driver must accept it
#endif
  status |= VIRTIO_STATUS_FEATURES_OK;
  *R(VIRTIO_MMIO_STATUS) = status;
#ifndef VIRTIO_LEGACY
  if (!(*R(VIRTIO_MMIO_STATUS) & VIRTIO_STATUS_FEATURES_OK))
    panic("virtio disk: the device refused our features");
#endif

  *R(VIRTIO_MMIO_QUEUE_SEL) = 0;
#ifndef VIRTIO_LEGACY
  if (*R(VIRTIO_MMIO_QUEUE_READY))
    panic("virtio disk: queue 0 already in use");
#endif
  uint32 max = *R(VIRTIO_MMIO_QUEUE_NUM_MAX);
  if (max < NUM)
    panic("virtio disk: queue 0 is too short");
  *R(VIRTIO_MMIO_QUEUE_NUM) = NUM;

  memset(queue_pages, 0, sizeof(queue_pages));
  disk.desc = (struct virtq_desc *)queue_pages;
  disk.avail = (struct virtq_avail *)(queue_pages + NUM * sizeof(struct virtq_desc));
  disk.used = (struct virtq_used *)(queue_pages + PGSIZE);

#ifdef VIRTIO_LEGACY
  *R(VIRTIO_MMIO_GUEST_PAGE_SIZE) = PGSIZE;
  *R(VIRTIO_MMIO_QUEUE_ALIGN) = PGSIZE;
  *R(VIRTIO_MMIO_QUEUE_PFN) = ((uint64)queue_pages) >> 12;
#else
  *R(VIRTIO_MMIO_QUEUE_DESC_LOW) = (uint64)disk.desc;
  *R(VIRTIO_MMIO_QUEUE_DESC_HIGH) = (uint64)disk.desc >> 32;
  *R(VIRTIO_MMIO_QUEUE_AVAIL_LOW) = (uint64)disk.avail;
  *R(VIRTIO_MMIO_QUEUE_AVAIL_HIGH) = (uint64)disk.avail >> 32;
  *R(VIRTIO_MMIO_QUEUE_USED_LOW) = (uint64)disk.used;
  *R(VIRTIO_MMIO_QUEUE_USED_HIGH) = (uint64)disk.used >> 32;
  *R(VIRTIO_MMIO_QUEUE_READY) = 1;
#endif

  for (int i = 0; i < NUM; i++)
    disk.free[i] = 1;

  status |= VIRTIO_STATUS_DRIVER_OK;
  *R(VIRTIO_MMIO_STATUS) = status;
}

// Three free descriptors into idx[], or -1 (taking none) when there are not three.
static int alloc3_desc(int *idx)
{
  int n = 0;
  for (int i = 0; i < NUM && n < 3; i++) {
    if (disk.free[i])
      idx[n++] = i;
  }
  if (n < 3)
    return -1;
  for (int i = 0; i < 3; i++)
    disk.free[idx[i]] = 0;
  return 0;
}

static void free_chain(int i)
{
  for (;;) {
    int flags = disk.desc[i].flags;
    int next = disk.desc[i].next;
    if (disk.free[i])
      panic("virtio disk: freeing a free descriptor");
    memset(&disk.desc[i], 0, sizeof(disk.desc[i]));
    disk.free[i] = 1;
    if (!(flags & VRING_DESC_F_NEXT))
      break;
    i = next;
  }
  wakeup(&disk.free[0]);
}

// Read (write == 0) or write b's block, sleeping until the disk is done.
void virtio_disk_rw(struct buf *b, int write)
{
  uint64 sector = b->blockno * (BSIZE / 512);
  int idx[3];

  acquire(&disk.vdisk_lock);
  while (alloc3_desc(idx) != 0)
    sleep(&disk.free[0], &disk.vdisk_lock);

  // Header, data, status: the device reads the first, reads or writes the second, and
  // writes the one status byte.
  struct virtio_blk_req *req = &disk.ops[idx[0]];
  req->type = write ? VIRTIO_BLK_T_OUT : VIRTIO_BLK_T_IN;
  req->reserved = 0;
  req->sector = sector;

  disk.desc[idx[0]].addr = (uint64)req;
  disk.desc[idx[0]].len = sizeof(*req);
  disk.desc[idx[0]].flags = VRING_DESC_F_NEXT;
  disk.desc[idx[0]].next = idx[1];

  disk.desc[idx[1]].addr = (uint64)b->data;
  disk.desc[idx[1]].len = BSIZE;
  disk.desc[idx[1]].flags = (write ? 0 : VRING_DESC_F_WRITE) | VRING_DESC_F_NEXT;
  disk.desc[idx[1]].next = idx[2];

  disk.info[idx[0]].status = 0xff;  // the device overwrites it
  disk.desc[idx[2]].addr = (uint64)&disk.info[idx[0]].status;
  disk.desc[idx[2]].len = 1;
  disk.desc[idx[2]].flags = VRING_DESC_F_WRITE;
  disk.desc[idx[2]].next = 0;

  b->disk = 1;
  disk.info[idx[0]].b = b;

  disk.avail->ring[disk.avail->idx % NUM] = idx[0];
  __sync_synchronize();  // the entry before the index that publishes it
  disk.avail->idx += 1;
  __sync_synchronize();
  *R(VIRTIO_MMIO_QUEUE_NOTIFY) = 0;

  while (b->disk == 1)
    sleep(b, &disk.vdisk_lock);

  disk.info[idx[0]].b = 0;
  free_chain(idx[0]);
  release(&disk.vdisk_lock);
}

void virtio_disk_intr(void)
{
  acquire(&disk.vdisk_lock);

  // Acknowledge first: a completion that arrives while we drain the ring raises a new
  // interrupt rather than being lost.
  *R(VIRTIO_MMIO_INTERRUPT_ACK) = *R(VIRTIO_MMIO_INTERRUPT_STATUS) & 0x3;
  __sync_synchronize();

  while (disk.used_idx != disk.used->idx) {
    __sync_synchronize();
    int id = disk.used->ring[disk.used_idx % NUM].id;
    if (disk.info[id].status != 0)
      panic("virtio disk: request failed");
    struct buf *b = disk.info[id].b;
    b->disk = 0;  // the buf belongs to the caller again
    wakeup(b);
    disk.used_idx += 1;
  }

  release(&disk.vdisk_lock);
}

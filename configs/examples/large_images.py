# The quickstart model on large images of small objects (docs/inference.md): 4 x 4 mosaics of the
# synthetic shapes, written by `python -m retdet.data.synthetic --output datasets/shapes_mosaic --grid 4`.
# The test resize keeps the objects at the size the model trained on (about 160 / 270 of their stored
# size, as for the single images); model.tiling then runs 256-pixel windows (see test_time_aug.py).
from ..quickstart import dataloader, imports, lr_scheduler, model, optimizer, train

dataloader.register = [dict(name="shapes_mosaic", json_file="datasets/shapes_mosaic/annotations.json",
                            image_root="datasets/shapes_mosaic/images")]
dataloader.test.dataset.names = ["shapes_mosaic"]
dataloader.test.transforms = [dict(type="ResizeShortestEdge", short_edge_length=640, max_size=1280)]
dataloader.test.batch_size = 1
model.tiling = dict(tile=256, overlap=128, full_image=True)
train.output_dir = "./output/large_images"

# The quickstart with a head from your own module (examples/my_head.py; docs/custom_components.md).
from ..quickstart import dataloader, lr_scheduler, model, optimizer, train

imports = ["../../examples/my_head.py"]  # a path relative to this file, or a module name on PYTHONPATH
model.head = dict(type="LightRetinaNetHead", num_classes=4, num_convs=2, norm="GN")
train.output_dir = "./output/custom_head"

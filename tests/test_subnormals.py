"""A training step makes no subnormal floats, however confident the classifier (they are what made
fresh-weight steps several times slower on x86 CPUs); and the counter that checks it counts."""
import torch

from retdet.config import load_config
from retdet.modeling import build_model
from retdet.structures import ImageSample
from retdet.utils.subnormals import SubnormalCounter, count_subnormal


def test_counter_counts_what_ops_make():
    with SubnormalCounter() as counter:
        torch.empty(1000)  # uninitialised memory is not a value: not counted
        small = torch.full((10,), 1e-20)
        product = small * small  # 1e-40: subnormal in float32
        product.view(2, 5)  # a view reads the same values: listed, not in the total
    assert count_subnormal(product) == 10
    assert counter.by_op["mul"] == 10 and counter.by_op["view"] == 10 and counter.total == 10


def test_confident_training_step_makes_no_subnormals():
    """Classifier biases at -31 put the logits where an easy negative's focal loss and gradient
    (~p^3, p ~ 3e-14) are subnormal floats: the state of a well-trained detector, or of random
    weights on 0..255 inputs."""
    torch.manual_seed(0)
    model = build_model(load_config("tests/configs/tiny_train.py").model).train()
    with torch.no_grad():
        model.head.cls_score.bias.fill_(-31.0)
    g = torch.Generator().manual_seed(0)
    samples = [ImageSample(image=torch.rand(3, 96, 128, generator=g) * 255, image_id=i,
                           gt_boxes=torch.tensor([[10.0, 12.0, 60.0, 70.0]]), gt_labels=torch.tensor([1]))
               for i in range(2)]
    with SubnormalCounter() as counter:
        losses = model(samples)
        sum(losses.values()).backward()
    assert counter.total == 0, counter.by_op.most_common(5)
    # The logits do reach that region: the plain formula of the loss is subnormal there.
    with torch.no_grad():
        features = model.features(model.preprocess([s.image for s in samples]).tensor)
        p = torch.cat([torch.sigmoid(x).flatten() for x in model.head(features)[0]])
    assert count_subnormal(0.75 * p * p * p) > 1000

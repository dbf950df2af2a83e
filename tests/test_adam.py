"""verikit's small Adam follows torch.optim.Adam's trajectory exactly (both directions)."""
import torch

from verikit.adam import Adam


def test_matches_torch_adam_descending_and_ascending():
    for maximize in (False, True):
        start = torch.tensor([1.0, -2.0, 0.5])
        reference = start.clone().requires_grad_(True)
        ours = start.clone()
        torch_adam = torch.optim.Adam([reference], lr=0.05, maximize=maximize)
        adam = Adam([ours], lr=0.05, maximize=maximize)
        objective = lambda x: ((x - 0.3) ** 2 * torch.tensor([1.0, 2.0, 3.0])).sum()  # noqa: E731
        for _ in range(30):
            torch_adam.zero_grad()
            objective(reference).backward()
            torch_adam.step()
            probe = ours.clone().requires_grad_(True)
            (gradient,) = torch.autograd.grad(objective(probe), probe)
            adam.step([gradient])
        assert torch.allclose(reference.detach(), ours, atol=1e-6)

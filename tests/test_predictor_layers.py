"""The predictor and ``wn.posterior`` on a composed convolutional description with image inputs,
against a float64 reference written out here (scipy's expm on the analytic CNTK)."""
import numpy as np
import scipy.linalg
import torch

import wideNN as wn


def test_cnn_ntk_gp_mean_at_t_equals_expm_reference():
    torch.manual_seed(0)
    cnn = wn.Serial(wn.Conv(3), "relu", wn.GlobalAvgPool(), wn.Dense(),
                    weight_variance=2.0, bias_variance=0.01)
    x = torch.randn(12, 1, 5, 5, dtype=torch.float64)
    y = torch.randn(12, 2, dtype=torch.float64)
    x_test = torch.randn(4, 1, 5, 5, dtype=torch.float64)
    t, n = 10.0, 12
    theta = cnn.ntk(torch.cat([x, x_test])).numpy()
    k_train, k_test = theta[:n, :n], theta[n:, :n]
    decay = np.eye(n) - scipy.linalg.expm(-t * k_train / n)
    reference = k_test @ np.linalg.solve(k_train, decay @ y.numpy())

    pred = wn.Predictor(cnn, x, y, "ntk", wn.GradientFlow(1.0))
    np.testing.assert_allclose(pred.predict(x_test, t=t).mean.numpy(), reference, rtol=0, atol=1e-12)
    post = wn.posterior(cnn, x, y, x_test, kernel="ntk", t=t)
    np.testing.assert_allclose(post.mean.numpy(), reference, rtol=0, atol=1e-12)

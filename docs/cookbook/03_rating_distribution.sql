-- Q: How are reflection ratings (G(trial+1) - G(trial), newest label version) distributed per model version?
SELECT model_version, rating, count(*) AS n_reflections
FROM lake.reflection_quality
WHERE rating IS NOT NULL
GROUP BY ALL
ORDER BY model_version, rating;
